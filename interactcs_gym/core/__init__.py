"""The suite's contract: the DialogueEnv base, text spaces and the info keys (SPEC section 3)."""

from interactcs_gym.core.env import INFO_KEYS, DialogueEnv, Opening, StepOutcome
from interactcs_gym.core.spaces import UnicodeText

__all__ = ["DialogueEnv", "Opening", "StepOutcome", "INFO_KEYS", "UnicodeText"]
