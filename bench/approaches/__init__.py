"""The approaches of the benchmark; importing this package registers all of them."""

from bench.approaches import (  # noqa: F401  (registration happens on import)
    ce_crnn,
    crnn,
    crnn_gru,
    crnn_modified,
    crnn_resnet,
    lstm_columns,
    multihead,
    poolfree,
)
from bench.approaches.registry import (
    Approach,
    get_approach,
    list_approaches,
    register,
)

__all__ = ["Approach", "get_approach", "list_approaches", "register"]
