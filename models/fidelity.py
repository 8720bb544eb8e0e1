"""The fidelity table: family x aspect -> official source and status, from the eval profiles.

``harness models --fidelity`` prints it; ``docs/fidelity.md`` holds the same
text (tests/test_prompt_golden.py fails when they drift apart).
"""

from __future__ import annotations

from harness.models.profiles import PROFILES
from harness.models.registry import ENTRIES

HEADER = """# Fidelity: each family's eval profile against its official code

Generated from `harness/models/profiles.py` by `harness models --fidelity`
(tests/test_prompt_golden.py checks this file is current). One row per profile
aspect: the official file and function it transcribes, and its status:
**matched** (the harness does what that code does; golden tests pin the
prompt strings and pixels), **differs** (on purpose, with the reason), or
**unverified** (the official code could not be read or states nothing).
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\\\|").replace("\\n", " ")


def fidelity_markdown() -> str:
    """The whole of docs/fidelity.md."""
    lines = [HEADER]
    for profile in PROFILES.values():
        users = [e.name for e in ENTRIES if e.profile is profile]
        lines.append(f"## {profile.name}\n")
        lines.append(f"Models: {', '.join(users) or '(none registered)'}\n")
        lines.append("| aspect | status | source | note |")
        lines.append("| --- | --- | --- | --- |")
        for key, aspect in profile.aspects().items():
            lines.append(
                f"| {key} | {aspect.status} | {_cell(aspect.source)} | {_cell(aspect.note)} |"
            )
        lines.append("")
    return "\n".join(lines)
