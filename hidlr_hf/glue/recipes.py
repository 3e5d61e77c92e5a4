"""Recipes: a YAML mapping of ``hidlr-glue`` flag names (without dashes) to values, checked against the flags.

``hidlr-glue recipes/rte.yaml [--flag value ...]``: the recipe's entries become command-line tokens placed before the
real ones, so flags typed on the command line override the recipe. Unknown keys and values of the wrong type are
refused with a one-line message that names the key (and suggests the closest flag).
"""

from __future__ import annotations

import difflib
import json
import os

from hidlr_hf.errors import HiDLRError

__all__ = ["close_matches", "flag_actions", "read_recipe", "recipe_tokens"]


def flag_actions(parser) -> dict:
    """dest -> the action of its ``--dest`` flag (not the ``--no_dest`` complement)."""
    actions = {}
    for action in parser._actions:
        if action.dest == "help" or not action.option_strings:
            continue
        if any(opt == f"--{action.dest}" for opt in action.option_strings):
            actions[action.dest] = action
    return actions


def close_matches(word: str, candidates) -> str:
    """``"; did you mean X?"`` for the candidates close to ``word``, else an empty string."""
    matches = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(matches)}?" if matches else ""


def read_recipe(path: str) -> dict:
    """The YAML mapping in ``path`` (``yaml.safe_load``)."""
    import yaml

    if not os.path.isfile(path):
        raise HiDLRError(f"recipe {path} not found; give the path of a YAML recipe such as recipes/rte.yaml")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise HiDLRError(f"recipe {path} is not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HiDLRError(f"recipe {path} must be a mapping of flag names to values, not a {type(data).__name__}")
    return data


def _expected(action) -> str:
    from transformers.hf_argparser import string_to_bool

    if action.choices is not None:
        return "one of " + ", ".join(map(str, action.choices))
    if action.type is string_to_bool:
        return "true or false"
    if action.type is int:
        return "an integer"
    if action.type is float:
        return "a number"
    if action.nargs == "+":
        return "a string or a list of strings"
    return "a string"


def _recipe_value_tokens(key: str, value, action, source: str) -> list[str]:
    """Command-line tokens for one recipe entry, after checking its type against the flag's."""
    from transformers.hf_argparser import string_to_bool

    def wrong():
        return HiDLRError(
            f"recipe {source}: {key} must be {_expected(action)}, got {value!r} ({type(value).__name__})"
        )

    flag = f"--{key}"
    if action.type is string_to_bool:
        if not isinstance(value, bool):
            raise wrong()
        return [f"{flag}={'true' if value else 'false'}"]
    if action.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
        return [f"{flag}={value}"]
    if action.type is float:
        # PyYAML reads 1e-5 (no dot) as a string: accept any string float() accepts.
        if isinstance(value, bool):
            raise wrong()
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise wrong() from None
        if not isinstance(value, (int, float)):
            raise wrong()
        return [f"{flag}={value!r}"]
    if action.type not in (None, str) and action.choices is None:
        if action.nargs == "+" and isinstance(value, list):
            return [flag, *map(str, value)]
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return [f"{flag}={value}"]
        raise HiDLRError(f"recipe {source}: {key} cannot be set from a recipe; pass it on the command line")
    # Strings and choices.
    if isinstance(value, dict):
        return [f"{flag}={json.dumps(value)}"]  # JSON-valued fields (lr_scheduler_kwargs, fsdp_config, ...)
    if isinstance(value, list):
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            raise wrong()
        if action.nargs == "+":
            return [flag, *map(str, value)]
        return [f"{flag}={','.join(map(str, value))}"]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise wrong()
    if action.choices is not None and str(value) not in [str(c) for c in action.choices]:
        raise wrong()
    return [f"{flag}={value}"]


def recipe_tokens(recipe: dict, parser, source: str = "recipe") -> list[str]:
    """Check a recipe's keys and value types against ``parser``'s flags and turn it into command-line tokens."""
    actions = flag_actions(parser)
    tokens: list[str] = []
    for key, value in recipe.items():
        if not isinstance(key, str):
            raise HiDLRError(f"recipe {source}: key {key!r} is not a flag name")
        name = key[2:] if key.startswith("--") else key
        if name not in actions:
            raise HiDLRError(f"recipe {source}: unknown key {key!r}{close_matches(name, actions)}")
        if value is None:
            if actions[name].default is None:
                continue  # null = leave the default (None) in place
            raise HiDLRError(f"recipe {source}: {name} must be {_expected(actions[name])}, not null")
        tokens.extend(_recipe_value_tokens(name, value, actions[name], source))
    return tokens
