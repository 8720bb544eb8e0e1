"""The option-letter loss of the multiple-choice probes (tried on toy-llava, not shipped).

:class:`LetterLabelledSamples` is ``EncodedSamples`` whose prompts also label the letters
that open each option (``B`` after ``A. red``; :func:`option_letter_positions`), so the
model must carry the letter of the option it reads. Labels the library already set (the
answer, the option checks) are kept. ``mc_lookup_probe.py`` and ``mc_finetune_probe.py
--option-letter-loss`` use it; docs/research/toy-llava-multiple-choice.md has the numbers.
"""

from __future__ import annotations

from dataclasses import replace

from harness.trainers.llava_stages import (
    IGNORE_INDEX,
    Encoded,
    EncodedSamples,
    option_letter_positions,
)


def with_letter_labels(example: Encoded, tokenizer: object) -> Encoded:
    """``example`` with the prompt's option letters labelled where nothing else is."""
    letters = option_letter_positions(tokenizer, example.input_ids)
    labels = example.labels.clone()
    free = letters & (labels == IGNORE_INDEX)
    labels[free] = example.input_ids[free]
    return replace(example, labels=labels)


class LetterLabelledSamples(EncodedSamples):
    """``EncodedSamples`` with :func:`with_letter_labels` applied to every example."""

    def take(self, indices):  # type: ignore[no-untyped-def]
        tokenizer = self.processor.tokenizer
        return [with_letter_labels(e, tokenizer) for e in super().take(indices)]
