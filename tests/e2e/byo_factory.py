"""A custom model for the factory kind: a small GRU language model (no transformer at all)."""

from torch import nn


class GRULM(nn.Module):
    def __init__(self, vocab_size: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden)
        self.rnn = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out)


def gru_lm(vocab_size: int, seq_len: int, activation_checkpointing: bool,
           hidden: int = 64) -> nn.Module:
    """forgeline's factory contract: tokens [b, t] → logits [b, t, vocab_size]."""
    return GRULM(vocab_size, hidden)
