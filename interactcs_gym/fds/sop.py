"""The FoodDeliveryService standard operating procedure (SOP): the business rules as code.

One function, :func:`sop_remedy`, decides what the SOP grants for a dispute. It is used three ways:
the data generator writes its result into every order as ``fair_remedy``; the order loader checks
that every shipped ``fair_remedy`` still equals it; and the scripted SOP agent calls it with the
facts it can see (the order block of its system prompt plus whether the user has sent a photo).
The same rules, in words, are in the agent's system prompt (:mod:`interactcs_gym.fds.prompts`).

Rules (first match wins):

1. Responsible party ``user`` -> ``feedback`` (apologise, explain, record feedback; no compensation).
2. A delivery less than :data:`LATE_THRESHOLD_MIN` minutes late, or a quality/taste complaint with
   responsible ``unclear`` (a matter of taste, no objective defect) -> ``feedback``.
3. The complaint cannot be verified -> ``manual_review`` (submit for manual review, no compensation
   in chat). Verification: a late delivery by the order's promised/actual times; rider conduct by
   the IM log (responsible ``rider``; ``unclear`` cannot be verified); every other dispute by a
   photo the user sends in the chat.
4. Complaint-history tag ``frequent`` -> ``manual_review`` (no voucher or refund in chat).
5. Missing item or wrong item -> ``refund_item`` (refund of the affected item's price).
6. Everything else -> ``voucher`` (one goodwill voucher of :data:`VOUCHER_VALUE`).
"""

from __future__ import annotations

from typing import Literal

DisputeType = Literal["late_delivery", "damaged", "missing_item", "wrong_item", "cold_food",
                      "quality", "rider_conduct"]
Responsible = Literal["merchant", "rider", "platform", "user", "unclear"]
ComplaintHistory = Literal["none", "occasional", "frequent"]
RemedyKind = Literal["voucher", "refund_item", "feedback", "manual_review"]

DISPUTE_TYPES: tuple[str, ...] = ("late_delivery", "damaged", "missing_item", "wrong_item",
                                  "cold_food", "quality", "rider_conduct")
RESPONSIBLE_PARTIES: tuple[str, ...] = ("merchant", "rider", "platform", "user", "unclear")
COMPLAINT_HISTORY: tuple[str, ...] = ("none", "occasional", "frequent")
REMEDY_KINDS: tuple[str, ...] = ("voucher", "refund_item", "feedback", "manual_review")

#: A delivery this many minutes (or more) after the promised time counts as late.
LATE_THRESHOLD_MIN = 20
#: Face value of the one goodwill voucher an agent may issue per session (env cost 1.0).
VOUCHER_VALUE = 5.0
#: Disputes verified by a photo from the user (the others by order data or the IM log).
PHOTO_VERIFIED = frozenset({"damaged", "missing_item", "wrong_item", "cold_food", "quality"})


def needs_photo(dispute_type: str) -> bool:
    """Whether the SOP verifies this dispute type with a photo from the user."""
    return dispute_type in PHOTO_VERIFIED


def is_verified(dispute_type: str, responsible: str, late_minutes: int, photo_received: bool) -> bool:
    """Whether the complaint is verified, by the rule of its dispute type (see rule 3)."""
    if dispute_type == "late_delivery":
        return late_minutes >= LATE_THRESHOLD_MIN
    if dispute_type == "rider_conduct":
        return responsible == "rider"
    return photo_received


def sop_remedy(dispute_type: str, responsible: str, complaint_history: str, late_minutes: int,
               photo_received: bool) -> RemedyKind:
    """The remedy the SOP grants (rules 1-6 of the module docstring).

    >>> sop_remedy("cold_food", "rider", "none", 25, photo_received=True)
    'voucher'
    >>> sop_remedy("missing_item", "merchant", "frequent", 0, photo_received=True)
    'manual_review'
    >>> sop_remedy("late_delivery", "rider", "none", 12, photo_received=False)
    'feedback'
    """
    if responsible == "user":
        return "feedback"
    if dispute_type == "late_delivery" and late_minutes < LATE_THRESHOLD_MIN:
        return "feedback"
    if dispute_type == "quality" and responsible == "unclear":
        return "feedback"
    if not is_verified(dispute_type, responsible, late_minutes, photo_received):
        return "manual_review"
    if complaint_history == "frequent":
        return "manual_review"
    if dispute_type in ("missing_item", "wrong_item"):
        return "refund_item"
    return "voucher"
