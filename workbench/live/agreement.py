"""What two passes of the streaming ASR agree on, and what one pass wrote that is not
speech: decoding loops and lone punctuation marks (`workbench.live.asr`). Words are
compared as `norm` makes them (the word error rates' rule: `replace_non_word`)."""

from __future__ import annotations

from difflib import SequenceMatcher
from typing import Any

from workbench.engine.transcript import Word, replace_non_word

__all__ = ["agreement", "cut_loop", "loops", "norm", "punctuation_only"]

_MARKS = set(".,!?;:…-–—\"'«»“”‘’()[]{}。、，？！；：")


def norm(word: str) -> str:
    """A word as passes are compared: lower case, no punctuation (marks kept)."""
    return replace_non_word(word.lower(), "", keep="'")


def punctuation_only(word: str) -> bool:
    """Only punctuation marks (" .", which Whisper writes on noise and which always
    agreed); symbols that are said (" %", " &", " €") stay."""
    return all(c in _MARKS for c in word.strip())


def loops(segments: list[Any], threshold: float = 2.4) -> float:
    """How far the most repetitive segment's text is past `threshold` (gzip compression
    ratio, Whisper's own loop test; 0: none loops)."""
    ratios = [float(getattr(s, "compression_ratio", 0.0)) for s in segments]
    return max([r - threshold for r in ratios if r > threshold], default=0.0)


def cut_loop(words: list[Word], repeats: int = 3, runaway: int = 6) -> list[Word]:
    """`words` without decoding loops: an n-gram (n <= 4) said `repeats` times in a row up
    to the end of the pass ends them (kept once); one said `runaway` times in a row
    anywhere is kept once and the words after it stay.

    A repetition followed by other words is speech, not a loop: the sample call opens
    with "Hello? Hello. Oh hello, I didn't know ..." and cutting after the first "Hello"
    lost every word of the next 14 s, pass after pass. Nor may a runaway (laughter as
    "ha ha ha ha ha ha") take the words after it: its first copy is often committed
    already, and a pass that gives nothing new never moves the buffer on (a scripted
    decoder lost 19 s of words so).
    """
    said = [norm(w.word) for w in words]
    for i in range(len(words)):
        for n in range(1, 5):
            if i + repeats * n > len(words):
                break
            gram = said[i:i + n]
            if not all(said[i + r * n:i + (r + 1) * n] == gram for r in range(1, repeats)):
                continue
            j = i + repeats * n
            while said[j:j + n] == gram:
                j += n
            tail = said[j:]
            if len(tail) < n and tail == gram[:len(tail)]:
                return words[:i + n]
            if (j - i) // n >= runaway:
                return words[:i + n] + cut_loop(words[j:], repeats, runaway)
    return words


def cut_squeezed_repeat(words: list[Word], squeezed: float = 0.02, share: float = 0.2
                        ) -> list[Word]:
    """`words` without a copy of the n-gram (n >= 2) before it that ends the pass with its
    words squeezed to no length (all but its last word together shorter than `squeezed`
    s a word, or, for a copy of 4 words or more, than `share` of the same words the first
    time): Whisper's way of saying
    the last words again where the audio has run out ("Thank you very much. Thank you
    very much." with the copy at 8.16 s, 8.16 s, 8.16 s, 8.16-8.75 s; "I don't hear that
    New Jersey now." again at 29.61 s with "Jersey" 0.06 s long). A copy whose words
    have lengths is speech said again and stays."""
    said = [norm(w.word) for w in words]
    for n in range(len(words) // 2, 1, -1):
        if said[-n:] != said[-2 * n:-n]:
            continue
        length = sum(w.end - w.start for w in words[-n:-1])
        before = sum(w.end - w.start for w in words[-2 * n:-n - 1])
        # (a share of one to three words' lengths says nothing: Whisper stretches a first
        # word over the pause before it, and "thank you, thank you" went)
        if length < squeezed * (n - 1) or (n > 3 and length < share * before):
            return words[:-n]
    return words


def agreement(words: list[Word], previous: list[Word], edits: int = 0, run: int = 2,
               shift: float = 0.5) -> int:
    """How many leading `words` the `previous` hypothesis confirms: the common prefix
    (LocalAgreement), or with `edits` > 0 the prefix up to the last agreeing word when the
    two differ by at most `edits` words (each difference followed by at least `run`
    agreeing words whose start times are within `shift` s)."""
    a, b = [norm(w.word) for w in words], [norm(w.word) for w in previous]
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    if edits <= 0:
        return n
    agreed, used, i, j = n, 0, 0, 0
    for block in SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
        if block.size == 0:
            break
        gap = max(block.a - i, block.b - j)
        used += gap
        if used > edits:
            break
        size = 0
        while (size < block.size and abs(words[block.a + size].start
                                         - previous[block.b + size].start) <= shift):
            size += 1
        if gap and size < run:
            break
        if size:
            agreed = max(agreed, block.a + size)
        if size < block.size:
            break
        i, j = block.a + block.size, block.b + block.size
    return agreed
