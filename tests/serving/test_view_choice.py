"""serving.studies.choose: the served model gets the view slots it was trained on (view_slots' rule)."""

import pytest

from serving.errors import BadInput
from serving.studies import choose


@pytest.mark.parametrize(("views", "slots", "expected"), [
    (["Lateral", "PA"], 1, [1]),
    ([None, "Lateral"], 1, [0]),                      # unknown counts as frontal
    (["Lateral", "PA", "AP"], 2, [1, 0]),             # first frontal, first lateral
    (["PA", "AP"], 2, [0, None]),                     # no lateral: its slot is marked missing
    (["LL", "Lateral"], 2, [None, 0]),                # lateral only: a two-view model was trained on such studies
])
def test_slots(views, slots, expected):
    assert choose(views, slots) == expected


def test_a_one_view_model_refuses_a_lateral_only_study_without_echoing_views():
    with pytest.raises(BadInput, match="no frontal view") as err:
        choose(["Lateral", "LL"], 1)
    assert "LL" not in str(err.value)


def test_other_slot_counts_are_a_programming_error():
    with pytest.raises(ValueError, match="1 or 2"):
        choose(["PA"], 3)
