"""The exception types adaptivocab raises: problems the user can fix, and an interrupted
training run (kept here, light to import, so the CLI can tell them apart without torch)."""


class AdaptiVocabError(ValueError):
    """Bad input (corpus, tokenizer, patch folder, model folder).

    The CLI prints the message on one line and exits with status 2, so the
    message must say what is wrong and what to do about it.
    """


class TrainingInterrupted(AdaptiVocabError):
    """Ctrl-C during training; the message says where the checkpoint is. The CLI exits 130
    with it, as for any interrupted run, not 2 as for bad input."""
