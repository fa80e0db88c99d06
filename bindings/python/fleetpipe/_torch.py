"""fleetpipe.Dataset as a torch.utils.data.IterableDataset (imported only when torch is)."""
from torch.utils.data import IterableDataset

from .dataset import Dataset

__all__ = ["TorchDataset"]


class TorchDataset(Dataset, IterableDataset):
    """A fleetpipe.Dataset that DataLoader treats as iterable: each worker reads its share."""

    __iter__ = Dataset.__iter__
