"""The scripted SOP agent: investigate, ask for evidence, verify, compensate only when justified.

It sees only what any agent sees: the observation and ``info["messages"]`` (the system prompt's
``## Order`` block, read with :func:`interactcs_gym.fds.prompts.parse_order_block`, and the user's
messages). It never reads ``info["task"]``. Each turn it takes the first move of this plan that
applies and has not been done:

1. **greet**: apologise, name the merchant, ask a question about the problem (what happened, or a
   targeted question once the dispute type is known from the user's words);
2. **evidence**: when the SOP verifies this dispute by photo and none was shared, ask for one (once:
   a user who refuses or has none is not pressed);
3. **details**: if the problem is still unclear, ask what exactly went wrong;
4. **preference**: unless the user already said what they want, ask how they would like it resolved;
5. **resolve** by :func:`interactcs_gym.fds.sop.sop_remedy` with the facts it can see:
   ``refund_item`` -> refund the affected item's price; ``voucher`` -> offer the voucher (users who
   asked only for a report get the report instead, users set on a refund get a refund request for
   review) and issue it (action ``voucher``) only once the user accepts; ``feedback`` -> explain the
   policy and report to the merchant; ``manual_review`` -> submit the case for manual review;
6. **follow up**: report the problem to the merchant if not done yet;
7. **close**; if the user is still unhappy, submit the case for manual review (if not done), then
   polite closing variations.

Every turn follows the protocol; the ``<think>`` block states the agent's reading of the case.
"""

from __future__ import annotations

import re
from typing import Any

from interactcs_gym.core.agent import Agent
from interactcs_gym.fds.prompts import PHOTO_MARKER, parse_order_block
from interactcs_gym.fds.sop import VOUCHER_VALUE, needs_photo, sop_remedy

# The agent's own reading of the user (independent of the simulator's internals).
_DISPUTE_WORDS = (
    ("rider_conduct", r"\brider\b|\brude\b"),
    ("missing_item", r"\bmissing\b|wasn't in|was not in|\bforgot\b|without the"),
    ("wrong_item", r"wrong (dish|item|food|order)|got the wrong|different dish|something else|"
                   r"instead of the|not the \w+ i ordered"),
    ("damaged", r"crush|spill|leak|smash|broken|damaged|\bmess\b"),
    ("cold_food", r"\bcold\b|freezing"),
    ("late_delivery", r"\blate\b|took forever|only arrived|only came|instead of \d"),
    ("quality", r"tasted|undercooked|bland|\bdry\b|\braw\b|quality|not good|something was off|awful|terrible"),
)
_DEMAND_WORDS = (
    ("feedback_oriented", r"report|know about|hear about|passed on|pass it on|don't need compensation|"
                          r"don't want money|don't need a voucher"),
    ("rigid_pursuit", r"refund|money back"),
    ("incentive_open", r"compensation|make up for|give me|offer (anything|something)|what do i get|"
                       r"going to give"),
    ("preference_learning", r"options|suggest|what can you (actually )?do|open to"),
)
_REFUSED_PHOTO = re.compile(r"not sending|rather not|prefer not|no photo|don't have|didn't take|"
                            r"threw|won't send|stop asking|in the bin", re.IGNORECASE)
_ACCEPT = re.compile(r"\b(yes|works|sounds (good|fine)|please process|send it|i'll take|okay|fine|sure|"
                     r"lovely)\b", re.IGNORECASE)
_DECLINE = re.compile(r"don't (want|need)|rather|not what|no voucher|keep your|isn't what", re.IGNORECASE)
_QUESTION = {
    "late_delivery": "Did the rider or the app give you any update while you were waiting?",
    "damaged": "Was the packaging already damaged when the rider handed it over?",
    "missing_item": "Could you confirm which item was missing from the bag?",
    "wrong_item": "Could you tell me which dish you received instead?",
    "cold_food": "How long after the delivery did you open the food?",
    "quality": "What exactly was wrong with the dish?",
    "rider_conduct": "Could you tell me what the rider said or did?",
}
_PHOTO_LINE = re.compile(re.escape(PHOTO_MARKER) + r"[^\]]*\]")
_CLOSINGS = ("Is there anything else I can help you with today?",
             "Thank you for your patience. If anything else comes up, feel free to contact us.",
             "Thank you for contacting us, and have a nice day.",
             "I appreciate your understanding. Take care.")


def _classify(text: str, table: tuple[tuple[str, str], ...]) -> str | None:
    for label, pattern in table:
        if re.search(pattern, text, re.IGNORECASE):
            return label
    return None


class SOPAgent(Agent):
    """Scripted agent following the FDS SOP (module docstring)."""

    name = "sop"

    def reset(self, *, seed: int | None = None) -> None:
        self._done: set[str] = set()
        self._said: set[str] = set()
        self._facts: dict[str, Any] | None = None
        self._offered_turn: int | None = None
        self._closings = 0
        self._party = ""

    def __init__(self) -> None:
        self.reset()

    # ------------------------------------------------------------------ reading
    def _read(self, info: dict[str, Any]) -> dict[str, Any]:
        messages = info["messages"]
        if self._facts is None:
            self._facts = parse_order_block(messages[0]["content"])
        users = [m["content"] for m in messages if m["role"] == "user"]
        # Classify the user's own words, not the photo descriptions.
        text = " ".join(_PHOTO_LINE.sub(" ", u) for u in users)
        item = next((it["name"] for it in self._facts["items"] if it["name"].lower() in text.lower()), None)
        return {"users": users, "last": users[-1] if users else "",
                "dispute": _classify(text, _DISPUTE_WORDS),
                "demand": _classify(text, _DEMAND_WORDS),
                "photo": any(PHOTO_MARKER in u for u in users),
                "no_photo": any(_REFUSED_PHOTO.search(u) for u in users), "item": item,
                "turn": sum(1 for m in messages if m["role"] == "assistant") + 1}

    # ------------------------------------------------------------------ acting
    def act(self, observation: str, info: dict[str, Any]) -> str:
        s = self._read(info)
        f = self._facts
        think, response, action = self._plan(s, f)
        self._said.add(response)
        return f"<think>{think}</think><response>{response}</response><action>{action}</action>"

    def _plan(self, s: dict[str, Any], f: dict[str, Any]) -> tuple[str, str, str]:
        dispute, merchant = s["dispute"], f["merchant"]
        if "greet" not in self._done:
            self._done.add("greet")
            question = _QUESTION[dispute] if dispute else "Could you tell me what happened exactly?"
            return (f"First contact; dispute looks like {dispute or 'unclear'}. Acknowledge and investigate.",
                    f"I'm sorry to hear about the problem with your order from {merchant}. {question}", "chat")
        if dispute and needs_photo(dispute) and not s["photo"] and not s["no_photo"] and "photo" not in self._done:
            self._done.add("photo")
            what = f"the {s['item']}" if s["item"] else "the problem"
            return ("The SOP verifies this by photo and none was shared yet.",
                    f"Thank you for explaining. Could you please send a photo of {what} so I can look into it?",
                    "chat")
        if dispute is None and "details" not in self._done:
            self._done.add("details")
            return ("The problem is still unclear; ask for specifics.",
                    "I want to get this right for you. What exactly went wrong with the order?", "chat")
        if s["demand"] is None and "preference" not in self._done:
            self._done.add("preference")
            return ("I know the problem; ask what the user expects before deciding.",
                    "Thank you. How would you like us to resolve this?", "chat")
        if "resolve" not in self._done:
            return self._resolve(s, f)
        if "feedback" not in self._done:
            self._done.add("feedback")
            return ("Resolved as far as the SOP allows; make sure the problem is reported.",
                    f"I have also reported this to {self._party} so that it does not happen again.", "chat")
        return self._close()

    def _resolve(self, s: dict[str, Any], f: dict[str, Any]) -> tuple[str, str, str]:
        dispute = s["dispute"] or "quality"
        self._party = "our delivery team" if dispute == "rider_conduct" else f["merchant"]
        remedy = sop_remedy(dispute, f["responsibility_assessment"], f["complaint_history"],
                            int(f["late_minutes"]), photo_received=s["photo"])
        demand, merchant = s["demand"], self._party
        why = (f"SOP remedy: {remedy} (dispute {dispute}, responsibility {f['responsibility_assessment']}, "
               f"history {f['complaint_history']}, photo {'yes' if s['photo'] else 'no'}); user wants {demand}.")
        if remedy == "refund_item":
            self._done.add("resolve")
            line = next((it for it in f["items"] if it["name"] == s["item"]), None)
            if line is None:
                line = f["items"][0]
            amount = line["price"] * line["quantity"]
            return (why, f"Thank you for the photo, that confirms it. As the item is verified, the option "
                         f"under our policy is a refund for it: I have processed a refund of {amount:.2f} "
                         f"for the {line['name']}.", "chat")
        if remedy == "voucher" and demand not in ("feedback_oriented", "rigid_pursuit"):
            if self._offered_turn is None:
                self._offered_turn = s["turn"]
                return (why + " Offer the voucher first.",
                        f"Thank you, I have verified the problem. One option is a goodwill voucher of "
                        f"{VOUCHER_VALUE:.2f} for your next order. Would that work for you?", "chat")
            self._done.add("resolve")
            if _ACCEPT.search(s["last"]) and not _DECLINE.search(s["last"]):
                return (why + " The user accepted: issue it.",
                        f"Great, I have issued the {VOUCHER_VALUE:.2f} voucher to your account. Thank you "
                        f"for your understanding.", "voucher")
            self._done.add("feedback")
            return (why + " The user declined the voucher: report instead.",
                    f"Understood. I have reported this to {merchant} so that it does not happen again.", "chat")
        self._done.add("resolve")
        if remedy == "voucher" and demand == "feedback_oriented":
            self._done.add("feedback")
            return (why + " The user wants the problem reported, not money.",
                    f"You are right to raise this. I have reported it to {merchant} so that it does not "
                    f"happen again.", "chat")
        if remedy == "manual_review" or (remedy == "voucher" and demand == "rigid_pursuit"):
            self._done.add("escalate")
            if demand == "rigid_pursuit":
                return (why + " No refund can be promised; escalate the refund request.",
                        "I cannot promise a refund in this chat, but I have submitted your case and a "
                        "refund request for manual review, and the team will follow up with you.", "chat")
            return (why + " Nothing can be granted in chat; escalate.",
                    "I cannot offer compensation in this chat for this case, but I have submitted it for "
                    "manual review, and the team will follow up with you.", "chat")
        self._done.add("feedback")
        return (why + " No compensation under the SOP: explain and report.",
                f"Under our policy this case is not eligible for compensation, but I have reported it to "
                f"{merchant} so that it does not happen again.", "chat")

    def _close(self) -> tuple[str, str, str]:
        if self._closings == 1 and "escalate" not in self._done:
            self._done.add("escalate")
            return ("The user is still not satisfied; the last step the SOP allows is a review.",
                    "I understand this is not the outcome you hoped for. I have submitted your case for "
                    "manual review, and the team will follow up with you.", "chat")
        text = _CLOSINGS[min(self._closings, len(_CLOSINGS) - 1)]
        self._closings += 1
        return ("Nothing left to do under the SOP; close politely.", text, "chat")
