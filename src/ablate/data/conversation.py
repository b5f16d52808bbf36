"""Conversation templates: how a LLaVA conversation becomes token ids and a label mask, per language model.

A template turns ``[{"from": "human"|"gpt", "value": str}, ...]`` into pieces of text, each tokenized on its
own, so the label mask is exact by construction (no offset mapping): labels are IGNORE_INDEX everywhere except
the assistant replies and the end-of-turn token that closes each reply. Stage "align" always uses the plain
format (image, then caption + eos), as LLaVA-1.5 pretraining does whatever the language model;
stage "instruct" uses the template's chat format. ``prompt``/``encode_prompt`` build the generation prompt with
the same pieces, so a prompt at evaluation tokenizes exactly like the prompt part of a training sample.
"""
from __future__ import annotations

from dataclasses import dataclass

from ablate.data import IGNORE_INDEX, IMAGE_TOKEN, DataError

STAGES = ("align", "instruct")
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}

PHI_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
              "The assistant gives helpful, detailed, and polite answers to the user's questions.")
QWEN_SYSTEM = "You are a helpful assistant."


@dataclass(frozen=True)
class Template:
    """One chat format. ``user`` contains ``{q}`` and ends right where the assistant's reply begins."""
    name: str
    system: str = ""            # text before the first user turn
    user: str = "{q}"           # a user turn plus the assistant header
    reply_prefix: str = ""      # glued in front of each reply (" " after "ASSISTANT:"); part of the reply's tokens
    eot: str | None = None      # end-of-turn token; None: the tokenizer's eos token
    after_eot: str = ""         # unsupervised text between an end-of-turn and the next user turn
    chat: bool = True           # False: the plain format for every stage

    def eot_id(self, tokenizer) -> int:
        """Id of the end-of-turn token; a DataError when the tokenizer lacks it."""
        token = self.eot if self.eot is not None else tokenizer.eos_token
        if token is None:
            raise DataError(f"template {self.name!r} ends turns with the tokenizer's eos token, but the tokenizer "
                            f"has none. Fix: set tokenizer.eos_token, or use a template with its own end token.")
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is None or (tid == tokenizer.unk_token_id and token != tokenizer.unk_token):
            raise DataError(f"template {self.name!r} needs the token {token!r}, which the tokenizer lacks. "
                            f"Fix: pick the template that matches the LM (cfg.lm.template) or add the token.")
        return tid

    def prompt(self, question: str, image: bool = True) -> str:
        """Generation prompt for one question, ending where the assistant's reply begins. With ``image``,
        an ``<image>`` line is put in front of the question unless it already holds one."""
        if image and IMAGE_TOKEN not in question:
            question = f"{IMAGE_TOKEN}\n{question}"
        if not self.chat:
            # plain: the model sees only the image and continues with a caption
            return IMAGE_TOKEN if image else ""
        return self.system + self.user.replace("{q}", question)

    def encode_prompt(self, question: str, tokenizer, image: bool = True) -> list[int]:
        """Token ids of ``prompt(question)``, tokenized as the first prompt piece of a training sample is."""
        return _ids(tokenizer, self.prompt(question, image))

    def encode(self, conversation: list[dict], tokenizer, stage: str) -> tuple[list[int], list[int]]:
        """(input_ids, labels) of one conversation; labels are IGNORE_INDEX except replies + end-of-turn."""
        if stage not in STAGES:
            raise DataError(f"stage={stage!r}: unknown stage. Fix: use one of {STAGES}.")
        turns = _turns(conversation)
        pieces = _plain_pieces(turns) if stage == "align" or not self.chat else self._chat_pieces(turns)
        eot = self.eot_id(tokenizer) if self.chat and stage == "instruct" else _eos_id(tokenizer)
        ids, labels, pending = [], [], ""
        for kind, value in pieces:
            if kind == "prompt":
                # merge neighbouring prompt text so it tokenizes as one piece, as encode_prompt does
                pending += value
                continue
            if pending:
                part = _ids(tokenizer, pending)
                ids += part
                labels += [IGNORE_INDEX] * len(part)
                pending = ""
            part = _ids(tokenizer, value) if kind == "reply" else [eot]
            ids += part
            labels += part
        if pending:
            part = _ids(tokenizer, pending)
            ids += part
            labels += [IGNORE_INDEX] * len(part)
        return ids, labels

    def _chat_pieces(self, turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
        pieces = [("prompt", self.system)]
        for i, (role, text) in enumerate(turns):
            if role == "user":
                if i > 0 and turns[i - 1][0] == "assistant":
                    pieces.append(("prompt", self.after_eot))
                pieces.append(("prompt", self.user.replace("{q}", text)))
            else:
                pieces += [("reply", self.reply_prefix + text), ("eot", "")]
        return pieces


def _turns(conversation: list[dict]) -> list[tuple[str, str]]:
    """(role, text) pairs; leading assistant turns are dropped, as LLaVA's preprocessing does."""
    if not isinstance(conversation, list) or not conversation:
        raise DataError("a conversation must be a non-empty list of {'from', 'value'} turns. Fix the record.")
    turns = []
    for k, turn in enumerate(conversation):
        role = ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
        if role is None or not isinstance(turn.get("value"), str):
            raise DataError(f"turn {k} of a conversation is {turn!r}: expected {{'from': 'human'|'gpt', "
                            f"'value': str}}. Fix the record.")
        if turns or role == "user":
            turns.append((role, turn["value"]))
    return turns


def _plain_pieces(turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    # LLaVA's plain format: the user's words are dropped, only the image placeholder stays in front
    has_image = any(IMAGE_TOKEN in text for role, text in turns if role == "user")
    pieces = [("prompt", IMAGE_TOKEN if has_image else "")]
    for role, text in turns:
        if role == "assistant":
            pieces += [("reply", text), ("eot", "")]
    return pieces


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def _eos_id(tokenizer) -> int:
    return Template("plain", chat=False).eot_id(tokenizer)


TEMPLATES = {
    "plain": Template("plain", chat=False),
    # Mipha / LLaVA-Phi (conv_phi_v0): "<sys> USER: q ASSISTANT: a<|endoftext|>USER: ..."
    "phi": Template("phi", system=PHI_SYSTEM + " ", user="USER: {q} ASSISTANT:", reply_prefix=" ",
                    eot="<|endoftext|>"),
    # Qwen1.5 chat (ChatML); the newline after <|im_end|> is not supervised
    "chatml": Template("chatml", system=f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n",
                       user="<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n", eot="<|im_end|>",
                       after_eot="\n"),
    # base models without a chat format (Pythia, StableLM): USER/ASSISTANT turns closed by the tokenizer's eos
    "plain_chat": Template("plain_chat", user="USER: {q} ASSISTANT:", reply_prefix=" ", eot=None),
}


def get_template(name: str) -> Template:
    """The registered template ``name`` (the value of cfg.lm.template)."""
    if name not in TEMPLATES:
        raise DataError(f"lm.template={name!r}: unknown conversation template. Fix: use one of {sorted(TEMPLATES)}.")
    return TEMPLATES[name]


def fixed_strings() -> list[str]:
    """Every literal string the templates emit (for the word-level tokenizer's vocabulary)."""
    out = []
    for t in TEMPLATES.values():
        out += [t.system, t.user.replace("{q}", " "), t.reply_prefix, t.after_eot]
        if t.eot:
            out.append(t.eot)
    return [s for s in out if s.strip()]
