"""The one exception type adaptivocab raises for problems the user can fix."""


class AdaptiVocabError(ValueError):
    """Bad input (corpus, tokenizer, patch folder, model folder).

    The CLI prints the message on one line and exits with status 2, so the
    message must say what is wrong and what to do about it.
    """
