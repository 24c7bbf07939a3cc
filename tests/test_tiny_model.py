"""``cmpo.tiny_model.teach_opening_turn``: the examples it learns from and the loss it minimises."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return transformers.AutoTokenizer.from_pretrained(tiny_model_dir)


def test_opening_turns_are_the_templated_opening_and_the_agents_first_turn(tokenizer):
    import gymnasium as gym

    from cmpo.tiny_model import opening_turns
    from interactcs_gym.fds.fixed_agents import AlwaysVoucherAgent

    pairs = opening_turns(tokenizer, "FDS-Hard-v0", "always-voucher", 2, seed=5, env_kwargs={"split": "train"})
    env = gym.make("FDS-Hard-v0", split="train")
    for i, (prompt, completion) in enumerate(pairs):
        obs, info = env.reset(seed=5 + i)
        assert prompt == list(tokenizer.apply_chat_template(info["messages"], add_generation_prompt=True,
                                                            tokenize=True, return_dict=False))
        assert tokenizer.decode(prompt).endswith("<|im_end|>\n<|im_start|>assistant\n")
        turn = AlwaysVoucherAgent().act(obs, info)
        assert turn.endswith("<action>voucher</action>")
        assert tokenizer.decode(completion) == turn + "<|im_end|>"
    assert pairs[0][0] != pairs[1][0]  # two users, two openings


@pytest.mark.parametrize("context", [None, 5])
def test_imitation_loss_is_the_completion_cross_entropy_of_each_unpadded_dialogue(tiny_model_dir, tokenizer,
                                                                                 context):
    """Left padding and positions do not change the loss: it equals, token for token, the causal-LM
    loss of each (cut) prompt + completion on its own, at the positions it has in the dialogue."""
    from cmpo.tiny_model import _imitation_loss

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    batch = [(list(range(10, 30)), [40, 41, 42]), (list(range(50, 62)), [70, 71, 72, 73, 74])]
    with torch.no_grad():
        loss = _imitation_loss(model, batch, tokenizer.pad_token_id, context)
        total, count = 0.0, 0
        for prompt, completion in batch:
            cut = 0 if context is None else len(prompt) - context
            ids = torch.tensor([prompt[cut:] + completion])
            labels = torch.tensor([[-100] * (len(prompt) - cut) + completion])
            out = model(input_ids=ids, labels=labels, position_ids=torch.arange(cut, cut + ids.shape[1])[None])
            total, count = total + out.loss.item() * len(completion), count + len(completion)
    assert loss.item() == pytest.approx(total / count, rel=1e-5)
