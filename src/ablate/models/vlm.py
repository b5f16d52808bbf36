"""The VLM: encoder -> projector -> LM, with each `<image>` placeholder replaced by the projected image tokens.

Images and placeholders: `input_ids` hold one `<image>` id per image. `pixel_values` (or precomputed encoder
`image_features`) give one entry per placeholder, in the order the placeholders appear reading the batch row by
row; a batch with one image slot per row (B entries, rows without a placeholder being text-only) is accepted too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, GenerationConfig
from transformers.utils import ModelOutput

IGNORE_INDEX = -100


@dataclass
class VLMOutput(ModelOutput):
    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None          # (B, T', V) over the merged sequence
    labels: Optional[torch.LongTensor] = None           # (B, T') merged labels, -100 at image and pad positions
    attention_mask: Optional[torch.LongTensor] = None   # (B, T') merged mask


@dataclass
class Merged:
    inputs_embeds: torch.Tensor          # (B, T', D_lm)
    attention_mask: torch.Tensor         # (B, T')
    position_ids: torch.Tensor           # (B, T') 0.. along the real tokens, whichever side the padding is on
    labels: Optional[torch.Tensor]       # (B, T') or None


def _additive(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, Q, K) bool, True where a query may attend a key -> (B, 1, Q, K) additive mask (0 or dtype's min), the
    form transformers passes through unchanged to both its eager and its SDPA attention."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(~keep, torch.finfo(dtype).min)[:, None]


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor,
                   attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not -100 (0 when there are none).

    A token is only predicted from a real position: with left padding the last pad would otherwise "predict" the
    first real token, a term right padding never has.
    """
    shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])   # (B*(T'-1), V)
    shift_labels = labels[:, 1:]                                           # (B, T'-1)
    if attention_mask is not None:
        shift_labels = shift_labels.masked_fill(attention_mask[:, :-1] == 0, IGNORE_INDEX)
    shift_labels = shift_labels.reshape(-1)                                # (B*(T'-1),)
    total = F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (shift_labels != IGNORE_INDEX).sum().clamp(min=1)


class VLM(nn.Module):
    def __init__(self, encoder: nn.Module, projector: nn.Module, lm: nn.Module, *, image_token_id: int,
                 pad_token_id: int, eos_token_id: int, padding_side: str = "right"):
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.lm = lm                     # may later be wrapped by peft (ablate.models.adapt)
        self.image_token_id = int(image_token_id)
        self.pad_token_id = int(pad_token_id)
        self.eos_token_id = int(eos_token_id)
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r}: valid: left, right")
        self.padding_side = padding_side     # of training batches after the merge; generate() always pads left

    @property
    def lm_model(self) -> nn.Module:
        """The transformers causal LM (LoRA layers, if any, are injected into it in place)."""
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    # ---- images ---------------------------------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, L_img, D_v) encoder features: what a feature cache stores for a frozen encoder."""
        if any(p.requires_grad for p in self.encoder.parameters()):
            return self.encoder(pixel_values)
        with torch.no_grad():            # frozen encoder: keep no activations for backward
            return self.encoder(pixel_values)

    def image_embeddings(self, input_ids: torch.Tensor, pixel_values: Optional[torch.Tensor] = None,
                         image_features: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """(N_placeholders, L_img, D_lm) projected image tokens in placeholder order, or None without any."""
        per_row = (input_ids == self.image_token_id).sum(dim=1)                # (B,)
        n = int(per_row.sum())
        if n == 0:
            return None
        src = image_features if image_features is not None else pixel_values
        if src is None:
            raise ValueError(f"input_ids hold {n} <image> placeholder(s) (id {self.image_token_id}) but neither "
                             "pixel_values nor image_features was given")
        if src.shape[0] != n:
            if src.shape[0] == input_ids.shape[0] and int(per_row.max()) <= 1:
                src = src[per_row == 1]      # one slot per row: drop the slots of text-only rows
            else:
                raise ValueError(f"{src.shape[0]} images for {n} <image> placeholders (per row: "
                                 f"{per_row.tolist()}): give one image per placeholder, or one per row when "
                                 "each row has at most one placeholder")
        return self.project_images(src if image_features is None else None, image_features)

    def project_images(self, pixel_values: Optional[torch.Tensor] = None,
                       image_features: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(N, L_img, D_lm) image tokens for the LM from pixels, or from precomputed encoder features."""
        feats = image_features if image_features is not None else self.encode_images(pixel_values)  # (N, L, D_v)
        return self.projector(feats.to(self.projector.fc1.weight.dtype))

    # ---- sequence assembly ----------------------------------------------------------------------------------
    def merge(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
              image_embeds: Optional[torch.Tensor], labels: Optional[torch.Tensor] = None,
              padding_side: Optional[str] = None) -> Merged:
        """Splice image tokens into the text embeddings, drop the old padding and pad again on `padding_side`."""
        side = padding_side or self.padding_side
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        is_img = input_ids == self.image_token_id
        # The placeholder id need not be a trained row (or even exist) in the table: embed id 0 there instead.
        tok = self.lm_model.get_input_embeddings()(input_ids.masked_fill(is_img, 0))   # (B, T, D_lm)
        if image_embeds is not None:
            image_embeds = image_embeds.to(tok.dtype)
        seqs, labs, k = [], [], 0
        for b in range(input_ids.shape[0]):
            keep = attention_mask[b].bool()
            emb, lab = tok[b][keep], labels[b][keep] if labels is not None else None
            parts, lparts, start = [], [], 0
            for p in is_img[b][keep].nonzero().flatten().tolist():
                img = image_embeds[k]                                               # (L_img, D_lm)
                k += 1
                parts += [emb[start:p], img]
                if lab is not None:
                    lparts += [lab[start:p], lab.new_full((img.shape[0],), IGNORE_INDEX)]
                start = p + 1
            seqs.append(torch.cat(parts + [emb[start:]]))
            if lab is not None:
                labs.append(torch.cat(lparts + [lab[start:]]))
        B, T = len(seqs), max(s.shape[0] for s in seqs)
        embeds = tok.new_zeros(B, T, tok.shape[-1])
        mask = attention_mask.new_zeros(B, T)
        out_labels = input_ids.new_full((B, T), IGNORE_INDEX) if labels is not None else None
        for b, s in enumerate(seqs):
            sl = slice(T - s.shape[0], T) if side == "left" else slice(0, s.shape[0])
            embeds[b, sl], mask[b, sl] = s, 1
            if out_labels is not None:
                out_labels[b, sl] = labs[b]
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        return Merged(embeds, mask, position_ids, out_labels)

    # ---- training / scoring ---------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                pixel_values: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                image_features: Optional[torch.Tensor] = None, labelled_logits_only: bool = False) -> VLMOutput:
        """With `labelled_logits_only` (training) the LM head runs only at positions some row predicts a
        labelled token from, and `logits` is (B, K, V) at those positions: the same loss, without the head's
        matmul and a float32 (B, T', V) tensor at every image and prompt position."""
        img = self.image_embeddings(input_ids, pixel_values, image_features)
        m = self.merge(input_ids, attention_mask, img, labels)
        if labelled_logits_only and labels is not None:
            shift = m.labels[:, 1:].masked_fill(m.attention_mask[:, :-1] == 0, IGNORE_INDEX)   # (B, T'-1)
            keep = (shift != IGNORE_INDEX).any(0).nonzero().flatten()                           # (K,)
            logits = self.lm_model(inputs_embeds=m.inputs_embeds, attention_mask=m.attention_mask,
                                   position_ids=m.position_ids, use_cache=False, logits_to_keep=keep).logits
            target = shift[:, keep]                                                             # (B, K)
            total = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                                    ignore_index=IGNORE_INDEX, reduction="sum")
            loss = total / (target != IGNORE_INDEX).sum().clamp(min=1)
            return VLMOutput(loss=loss, logits=logits, labels=m.labels, attention_mask=m.attention_mask)
        logits = self.lm_model(inputs_embeds=m.inputs_embeds, attention_mask=m.attention_mask,
                               position_ids=m.position_ids, use_cache=False).logits   # (B, T', V)
        loss = causal_lm_loss(logits, m.labels, m.attention_mask) if labels is not None else None
        return VLMOutput(loss=loss, logits=logits, labels=m.labels, attention_mask=m.attention_mask)

    # ---- inference ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 pixel_values: Optional[torch.Tensor] = None, max_new_tokens: int = 32,
                 eos_token_id: int | list[int] | None = None, image_features: Optional[torch.Tensor] = None
                 ) -> torch.LongTensor:
        """Greedy decoding with the KV cache, batched with left padding -> (B, T_new) new tokens only.

        Rows that stop early are filled with the pad id. Runs in eval mode (no dropout) and restores the mode.
        """
        was_training = self.training
        self.eval()
        try:
            img = self.image_embeddings(input_ids, pixel_values, image_features)
            m = self.merge(input_ids, attention_mask, img, padding_side="left")
            gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
                                   eos_token_id=self.eos_token_id if eos_token_id is None else eos_token_id,
                                   pad_token_id=self.pad_token_id,
                                   bos_token_id=self.lm_model.generation_config.bos_token_id)   # unused; no warning
            # With inputs_embeds and no input_ids, transformers returns only the new tokens; it derives
            # position ids from the (left-padded) attention mask, so rows do not depend on their batch.
            return self.lm_model.generate(inputs_embeds=m.inputs_embeds, attention_mask=m.attention_mask,
                                          generation_config=gen)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def generate_shared_prefix(self, prefix_ids: list[int], suffix_ids: list[list[int]], image_index: list[int],
                               pixel_values: Optional[torch.Tensor] = None, max_new_tokens: int = 32,
                               eos_token_id: int | list[int] | None = None,
                               image_features: Optional[torch.Tensor] = None) -> torch.LongTensor:
        """Greedy decoding for prompts `prefix_ids + <image> + suffix_ids[b]`, where row b shows image
        `image_index[b]` of `pixel_values` (U, 3, H, W) (or of `image_features`) -> (B, T_new) new tokens.

        Questions about one image share everything up to and including its image tokens (LLaVA puts the image
        first in the first user turn, after the system text). That prefix runs through the encoder and the LM
        once per distinct image, and its KV cache is copied to every row that asks about it; only the question
        suffixes (right-aligned, padding between prefix and suffix masked) and the answers run per row. A row's
        tokens and positions are those of its own unshared prompt, so its answer does not depend on which
        other rows share the batch. Rows that stop early are filled with the pad id.
        """
        if not suffix_ids or any(len(s) == 0 for s in suffix_ids):
            raise ValueError("generate_shared_prefix: every row needs at least one token after the image")
        if len(image_index) != len(suffix_ids):
            raise ValueError(f"{len(suffix_ids)} suffixes but {len(image_index)} image indices")
        stop = eos_token_id if eos_token_id is not None else self.eos_token_id
        stop = torch.tensor([stop] if isinstance(stop, int) else list(stop))
        was_training = self.training
        self.eval()
        try:
            lm, embed = self.lm_model, self.lm_model.get_input_embeddings()
            device = embed.weight.device
            img = self.project_images(pixel_values, image_features)                        # (U, L_img, D)
            U = img.shape[0]
            pre = embed(torch.tensor(prefix_ids, dtype=torch.long, device=device))       # (P0, D)
            prefix = torch.cat([pre[None].expand(U, -1, -1), img.to(pre.dtype)], dim=1)  # (U, P, D)
            P = prefix.shape[1]
            cache = DynamicCache()
            lm(inputs_embeds=prefix, position_ids=torch.arange(P, device=device)[None].expand(U, -1),
               past_key_values=cache, use_cache=True, logits_to_keep=1)
            rows = torch.tensor(image_index, dtype=torch.long, device=device)
            cache.reorder_cache(rows)                                                     # (B, ..., P, d)
            B, S = len(suffix_ids), max(len(s) for s in suffix_ids)
            ids = torch.full((B, S), self.pad_token_id, dtype=torch.long)
            smask = torch.zeros((B, S), dtype=torch.long)
            for b, s in enumerate(suffix_ids):            # right-aligned: the next token follows the last column
                ids[b, S - len(s):], smask[b, S - len(s):] = torch.tensor(s, dtype=torch.long), 1
            ids, smask = ids.to(device), smask.to(device)
            mask = torch.cat([torch.ones((B, P), dtype=torch.long, device=device), smask], dim=1)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            # The masks go in as 4-D additive masks built here: given a 2-D padding mask, transformers builds
            # the 4-D one itself on every forward (through vmap, several ms per step; this loop ran about 18%
            # faster at tiny scale without it). A suffix token sees the whole prefix and its row's real suffix
            # tokens up to itself.
            causal = torch.ones((S, S), dtype=torch.bool, device=device).tril()
            keep = torch.cat([torch.ones((B, S, P), dtype=torch.bool, device=device),
                              causal[None] & smask[:, None, :].bool()], dim=2)       # (B, S, P + S)
            dtype = prefix.dtype
            logits = lm(inputs_embeds=embed(ids), attention_mask=_additive(keep, dtype), position_ids=pos[:, P:],
                        past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
            next_pos = pos[:, -1:] + 1
            stop = stop.to(device)
            done = torch.zeros(B, dtype=torch.bool, device=device)
            out = []
            for _ in range(max_new_tokens):
                tok = logits.argmax(-1).masked_fill(done, self.pad_token_id)                 # (B,)
                out.append(tok)
                done |= torch.isin(tok, stop)
                if bool(done.all()):
                    break
                mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=1)
                step_mask = _additive(mask[:, None, :].bool(), dtype)                        # (B, 1, 1, K)
                logits = lm(inputs_embeds=embed(tok[:, None]), attention_mask=step_mask, position_ids=next_pos,
                            past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
                next_pos = next_pos + 1
            return torch.stack(out, dim=1) if out else torch.empty((B, 0), dtype=torch.long, device=device)
        finally:
            self.train(was_training)
