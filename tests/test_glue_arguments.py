"""hidlr-glue's arguments and recipes (hidlr_hf/glue/arguments.py, recipes.py)."""

import yaml
from conftest import REPO

from hidlr_hf.glue import arguments, recipes

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")


def test_every_recipe_parses():
    keys = set(arguments.valid_keys())
    names = {path.stem for path in RECIPES}
    for task in TASKS:
        assert {task, f"{task}_lora", f"{task}_autopeft"} <= names, task
    assert "quickstart_rte" in names
    for path in RECIPES:
        recipe = recipes.read_recipe(str(path))
        assert set(recipe) <= keys, (path.name, set(recipe) - keys)
        model_args, data_args, training_args, _given = arguments.parse_args([str(path)])
        assert data_args.task_name is not None, path.name
        assert model_args.peft in arguments.PEFT_MODES
        if path.stem != "quickstart_rte":
            assert model_args.model_name_or_path == "roberta-base"
            assert training_args.output_dir == f"runs/{path.stem}"


def test_recipes_are_plain_yaml():
    for path in (REPO / "recipes").glob("*.yaml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


def test_trust_remote_code_is_off_unless_asked(tmp_path):
    model_args, _, _, _ = arguments.parse_args(["--task_name", "rte", "--output_dir", str(tmp_path / "a")])
    assert model_args.trust_remote_code is False
    model_args, _, _, _ = arguments.parse_args(["--task_name", "rte", "--output_dir", str(tmp_path / "b"), "--trust_remote_code", "true"])
    assert model_args.trust_remote_code is True
