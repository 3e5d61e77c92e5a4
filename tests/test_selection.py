"""Budget parsing and the first-fit-by-rank selection of groups to keep (docs/METHOD.md section 8)."""

import math
import warnings

import pytest

from hidlr_hf import HiDLRError
from hidlr_hf.core.selection import GroupRecord, Selection, parse_budget, records_from_groups, select

NAN = math.nan


def rec(name, numel, influence, head=False):
    return GroupRecord(name, [f"{name}.weight"], numel, influence, head)


@pytest.mark.parametrize(
    "value, expected",
    [
        (0.01, {"kind": "fraction", "value": 0.01}),
        ("0.01", {"kind": "fraction", "value": 0.01}),
        (1.0, {"kind": "fraction", "value": 1.0}),
        ("1.0", {"kind": "fraction", "value": 1.0}),
        (150000, {"kind": "count", "value": 150000}),
        ("150000", {"kind": "count", "value": 150000}),
        (" 7 ", {"kind": "count", "value": 7}),
        ("top3", {"kind": "top_k", "value": 3}),
        ("top_k:3", {"kind": "top_k", "value": 3}),
        ("TOP_K=2", {"kind": "top_k", "value": 2}),
        ({"kind": "count", "value": 5}, {"kind": "count", "value": 5}),
    ],
)
def test_parse_budget(value, expected):
    assert parse_budget(value) == expected


@pytest.mark.parametrize(
    "value, words",
    [
        (0, "positive"),
        ("0", "positive"),
        (-0.5, "positive"),
        ("-3", "positive"),
        ("1.5", "(0, 1]"),
        (2.0, "integer count"),
        ("lots", "not a number"),
        ("", "not a number"),
        (None, "not a number"),
        (True, "not a number"),
        ("top0", "positive integer"),
        (float("nan"), "positive"),
        ({"kind": "percent", "value": 3}, "not a parsed budget"),
        ([0.1], "cannot be a list"),
    ],
)
def test_parse_budget_errors(value, words):
    with pytest.raises(HiDLRError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_budget(value)


def test_fraction_error_suggests_count():
    with pytest.raises(HiDLRError) as err:
        parse_budget("1.5")
    assert "integer count" in str(err.value) and "(0, 1]" in str(err.value)


def test_first_fit_by_rank_skips_groups_that_do_not_fit():
    groups = [
        rec("head", 10, NAN, head=True),
        rec("big", 100, 5.0),  # best, but too big after the head
        rec("mid", 50, 4.0),
        rec("small", 30, 3.0),  # does not fit after mid (10 + 50 + 30 > 85)
        rec("tiny", 20, 1.0),  # fits: first fit continues past `small`
    ]
    sel = select(groups, 85, total_params=1000)
    assert sel.kept_names == ["head", "mid", "tiny"]
    assert sel.rank == [None, 1, 2, 3, 4]
    assert sel.trainable_params == 80
    assert sel.trainable_fraction == pytest.approx(0.08)
    assert sel.budget == {"kind": "count", "value": 85}
    assert sel.total_params == 1000


def test_fraction_budget_counts_the_whole_model():
    groups = [rec("head", 5, NAN, head=True), rec("a", 40, 2.0), rec("b", 40, 1.0)]
    # 10% of 1000 = 100 parameters: head + a + ... b would reach 85, also fits
    assert select(groups, 0.1, total_params=1000).kept_names == ["head", "a", "b"]
    assert select(groups, 0.05, total_params=1000).kept_names == ["head", "a"]
    assert select(groups, "0.01", total_params=1000).kept_names == ["head"]


def test_head_is_always_kept_and_counts_toward_budget():
    groups = [rec("a", 10, 9.0), rec("head", 30, NAN, head=True), rec("b", 10, 1.0)]
    sel = select(groups, 45, total_params=100)
    assert sel.kept == [True, True, False]
    assert sel.rank == [1, None, 2]


def test_head_alone_over_budget_keeps_only_head_and_warns():
    groups = [rec("head", 50, NAN, head=True), rec("a", 1, 9.0)]
    with pytest.warns(UserWarning, match="head alone"):
        sel = select(groups, 10, total_params=100)
    assert sel.kept_names == ["head"]
    assert any("head alone" in n for n in sel.notes)


def test_unmeasured_groups_are_ranked_last_and_never_kept():
    groups = [rec("a", 1, NAN), rec("b", 1, 0.5), rec("head", 1, NAN, head=True), rec("c", 1, NAN)]
    with pytest.warns(UserWarning, match=r"2 group\(s\) were never measured.*a, c"):
        sel = select(groups, 1.0, total_params=100)  # everything would fit
    assert sel.kept == [False, True, True, False]
    assert sel.rank == [None, 1, None, None]


def test_all_unmeasured_is_an_error():
    groups = [rec("a", 1, NAN), rec("b", 1, NAN), rec("head", 1, 3.0, head=True)]
    with pytest.raises(HiDLRError, match="(?i)no probe round has measured influence yet; freeze after at least one"):
        select(groups, 0.5, total_params=10)


def test_count_budget_larger_than_model_is_an_error():
    with pytest.raises(HiDLRError, match="larger than the model"):
        select([rec("a", 5, 1.0)], 11, total_params=10)
    assert select([rec("a", 5, 1.0)], 10, total_params=10).kept == [True]


def test_top_k_keeps_k_best_whatever_their_size():
    groups = [rec("head", 1, NAN, head=True), rec("a", 1000, 1.0), rec("b", 5, 3.0), rec("c", 5, 2.0)]
    sel = select(groups, "top2", total_params=2000)
    assert sel.kept_names == ["head", "b", "c"]


def test_ties_keep_group_order_and_infinite_influence_ranks_first():
    groups = [rec("a", 1, 1.0), rec("b", 1, 1.0), rec("c", 1, math.inf), rec("d", 1, -1.0)]
    sel = select(groups, "top2", total_params=10)
    assert sel.rank == [2, 3, 1, 4]
    assert sel.kept_names == ["a", "c"]


def test_only_heads_is_an_error():
    with pytest.raises(HiDLRError, match="nothing to select"):
        select([rec("head", 1, NAN, head=True)], 0.5, total_params=10)


def test_selection_properties_without_select():
    sel = Selection([rec("a", 3, 1.0), rec("b", 7, 2.0)], [False, True], [2, 1], {"kind": "top_k", "value": 1}, 20)
    assert sel.trainable_params == 7 and sel.trainable_fraction == 0.35 and sel.kept_names == ["b"]


def test_records_from_groups():
    from torch import nn

    from hidlr_hf.core.grouping import ParameterGroup

    w, h = nn.Parameter(nn.init.zeros_(nn.Linear(2, 3).weight)), nn.Parameter(nn.Linear(3, 1).weight.detach())
    groups = [ParameterGroup("mlp", ["m.weight"], [w], [False]), ParameterGroup("head", ["h.weight"], [h], [False])]
    records = records_from_groups(groups, [0.25, NAN])
    assert [(r.name, r.numel, r.is_head) for r in records] == [("mlp", 6, False), ("head", 3, True)]
    assert records[0].influence == 0.25 and math.isnan(records[1].influence)
    with pytest.raises(HiDLRError, match="one value per group"):
        records_from_groups(groups, [1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fully measured selection is silent
        assert select(records_from_groups(groups, [0.25, NAN]), 1.0, total_params=9).kept == [True, True]
