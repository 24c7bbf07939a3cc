"""FoodDeliveryService (FDS), the after-sales dispute env of InteractCS-RL (SPEC section 4).

* :mod:`.env`: ``FoodDeliveryServiceEnv`` (registered as ``FDS-Hard-v0`` and ``FDS-Easy-v0``).
* :mod:`.scenarios`, :mod:`.personas`, :mod:`.splits`: the order bank, the persona bank and the
  hard/easy train/test user splits (data files in ``data/``, validated on load).
* :mod:`.sop`: the business rules (the fair remedy); :mod:`.prompts`: the agent's system prompt;
  :mod:`.protocol`: the ``<think>/<response>/<action>`` turn parser.
* :mod:`.generate_data`: regenerates the data files deterministically.
"""
