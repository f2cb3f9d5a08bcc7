"""The papers' own numbers, reproduced: ``cnnlab reproduce NAME`` runs a paper's experiment over seeds through the
engine and puts ours (mean ± sd) beside the paper's figure with a verdict. Entries: :data:`ENTRIES`."""

from cnnlab.reproduce.entries import ENTRIES, Arm, Entry
from cnnlab.reproduce.run import Reproduction, Row, get_entry, judge, list_entries, reproduce

__all__ = ["ENTRIES", "Arm", "Entry", "Reproduction", "Row", "get_entry", "judge", "list_entries", "reproduce"]
