"""The web action language: exact parsing, and errors that say what was expected."""

from __future__ import annotations

import pytest

from mcts_agent.envs.web.actions import KEYS, Action, ActionError, parse_action


@pytest.mark.parametrize("text, expected", [
    ("click(12)", Action("click", ref=12)),
    ("  click( 3 )\n", Action("click", ref=3)),
    ('type(7, "hello world")', Action("type", ref=7, text="hello world")),
    ('type(7,"say \\"hi\\"\\n")', Action("type", ref=7, text='say "hi"\n')),
    ('type(2, "")', Action("type", ref=2, text="")),
    ('select(4, "Red")', Action("select", ref=4, text="Red")),
    ('select(4, "Côte d\'Ivoire")', Action("select", ref=4, text="Côte d'Ivoire")),
    ('press("Enter")', Action("press", text="Enter")),
])
def test_valid_actions_parse_exactly(text: str, expected: Action) -> None:
    assert parse_action(text) == expected
    assert parse_action(str(expected)) == expected  # str() writes the action back in the language


@pytest.mark.parametrize("text, message", [
    ("", "cannot parse action ''; expected click(ref), type(ref, \"text\"), select(ref, \"option\") or press(\"Key\")"),
    ("Click the OK button", "cannot parse action 'Click the OK button'; expected click(ref)"),
    ("click([12])", "cannot parse action 'click([12])'; expected click(ref) with ref a number, e.g. click(12)"),
    ("click(12) then click(3)", "expected click(ref) with ref a number"),
    ("click(-1)", "expected click(ref) with ref a number"),
    ("type(7, hello)", 'expected type(ref, "text") with a double-quoted text'),
    ("type(7, 'hello')", 'expected type(ref, "text") with a double-quoted text'),
    ('type(7, "unterminated)', 'expected type(ref, "text")'),
    ('select(4)', 'expected select(ref, "option") with a double-quoted option'),
    ('press(Enter)', 'expected press("Key") with Key one of Enter, Tab'),
    ('press("F13")', "unknown key 'F13' in press(); expected one of Enter, Tab"),
    ('type(1, "' + "x" * 501 + '")', "the text of type() has 501 characters; at most 500 are allowed"),
])
def test_malformed_actions_say_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(ActionError) as e:
        parse_action(text)
    assert message in str(e.value)


def test_long_garbage_is_clipped_in_the_message_and_every_key_parses() -> None:
    with pytest.raises(ActionError) as e:
        parse_action("z" * 10_000)
    assert len(str(e.value)) < 250
    assert [parse_action(f'press("{k}")').text for k in KEYS] == list(KEYS)
    with pytest.raises(ActionError, match="an action must be a string, got int"):
        parse_action(3)  # type: ignore[arg-type]
