"""The official VQA answer normalisation (VQA/VizWiz evaluation scripts and the EvalAI answer processor).

Two layers, kept separate because the official pipelines apply them at different places:

* `process_punctuation` and `process_digit_article` are the two steps of the official VQA evaluation script
  (vqaEval.py): the evaluation server applies them to every submitted answer, and `process_punctuation` to
  the reference answers of a question whose ten references disagree.
* `normalize_answer` is the EvalAI answer processor that LLaVA runs on raw model outputs before writing a
  VQAv2 or VizWiz submission, and that the TextVQA evaluator runs on predictions *and* references. It
  lower-cases, drops commas and question marks, splits "'s", then applies the two steps above.

Quirks of the official code are reproduced on purpose, because published numbers depend on them:
* the period rule's look-behind is misspelt in the original as a look-ahead for the text "<=digit", so
  in practice a period is dropped unless a digit follows it: "1.5" keeps its period, "5." loses it;
* the original passes `re.UNICODE` (= 32) as the *count* argument of `re.sub`, so at most 32 periods are
  removed from one answer;
* each punctuation mark is deleted outright when it touches a space somewhere in the text (or the text
  has a digit-comma-digit group) and replaced by a space otherwise: "red-white" becomes "red white",
  "red - white" becomes "red  white" and "1,000" becomes "1000". The EvalAI processor removes commas before
  this step, so there "red,white" becomes "redwhite" while the VQA script alone gives "red white".
"""
from __future__ import annotations

import re

# Contractions written without their apostrophe, mapped to the spelling the VQA references use.
# Keys that start with a capital ("Im", "Ive", ...) can never match because the text is lower-cased
# first; they are kept because the official table has them, so the table stays comparable line by line.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}

# Only zero to ten are spelled out in the official map; "eleven" stays a word.
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})

# The official list; note that "'", ":" and "." are not in it ("." has its own rule below).
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
               ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
# Reproduces the official pattern's behaviour: a period not followed by a digit (see module docstring).
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_MAX_PERIODS_REMOVED = re.UNICODE  # == 32, the accidental count argument of the official re.sub call


def process_punctuation(text: str) -> str:
    """Official VQA punctuation step: delete or space out punctuation, then drop sentence periods."""
    out = text
    # The decision looks at the *input* text for every mark, as the official loop does.
    glue = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in PUNCTUATION:
        if mark + " " in text or " " + mark in text or glue:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=_MAX_PERIODS_REMOVED)


def process_digit_article(text: str) -> str:
    """Official VQA word step: lower-case, number words to digits, drop articles, restore contractions."""
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalize_answer(text: str) -> str:
    """EvalAI answer processor: what LLaVA applies to raw outputs before a VQAv2/VizWiz submission.

    >>> normalize_answer("Two dogs.")
    '2 dogs'
    >>> normalize_answer("The answer is 1.5")
    'answer is 1.5'
    """
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def official_vqa_prediction(text: str) -> str:
    """What the VQA/VizWiz evaluation script does to a submitted answer before comparing it."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))
