"""What the client tests share: the served model's name, the API key, the chat template, and
the marks of the optional clients (a module of its own: importing ``conftest`` by name picks
whichever conftest pytest loaded last)."""

from __future__ import annotations

import os

import pytest

# A Hermes template (Qwen2.5's shape, shortened): tools in a system block, calls as
# <tool_call> blocks, results as <tool_response>.
HERMES_TEMPLATE = """\
{%- if tools %}<|im_start|>system
Tools:
{% for t in tools %}{{ t | tojson }}
{% endfor %}Call one as <tool_call>{"name": ..., "arguments": ...}</tool_call><|im_end|>
{% endif %}
{%- for m in messages %}
{%- if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant
{{ m.content or '' }}{% for c in m.tool_calls %}<tool_call>
{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif m.role == 'tool' %}<|im_start|>user
<tool_response>{{ m.content }}</tool_response><|im_end|>
{% else %}<|im_start|>{{ m.role }}
{{ m.content or '' }}<|im_end|>
{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

MODEL = "demo"
API_KEY = "clients-key"

# LiteLLM, instructor and LlamaIndex: ``pip install -e ".[clients]"``, then
# ``SARATHI_OPTIONAL_CLIENTS=1 python -m pytest tests/clients -m clients_optional``.
OPTIONAL_ENV = "SARATHI_OPTIONAL_CLIENTS"
RUN_OPTIONAL = os.environ.get(OPTIONAL_ENV) == "1"
OPTIONAL = [
    pytest.mark.clients_optional,
    pytest.mark.skipif(
        not RUN_OPTIONAL,
        reason=f'optional client: pip install -e ".[clients]" and set {OPTIONAL_ENV}=1',
    ),
]
