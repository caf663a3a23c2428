"""Progressive (stage-wise) schedules: the V2-S table, one rule for every value, bad configurations."""

import pytest

from effnet import stages
from effnet.errors import UserError
from effnet.registry import Registry

V2S_FINAL = {"image_size": 300, "batch_size": 460, "dropout": 0.3, "drop_path": 0.2,
             "randaugment.num_layers": 2, "randaugment.magnitude": 15.0}
V2S_BASE = {"image_size": 128, "randaugment.magnitude": 5.0, "dropout": 0.1}


@pytest.fixture
def progressive():
    return Registry(autoload=False).get("stage_schedule", "progressive")


def table(stage_list):
    return [(s.index + 1, s.start_epoch, s.end_epoch, s.params["image_size"], round(s.params["randaugment.magnitude"], 3),
             round(s.params["dropout"], 4), s.params["batch_size"], s.params["randaugment.num_layers"]) for s in stage_list]


def test_v2s_recipe_table(progressive):
    result = stages.validate(progressive(epochs=350, final=V2S_FINAL, n_stages=4, base=V2S_BASE), 350, "progressive")
    assert table(result) == [
        (1, 0, 87, 128, 5.0, 0.1, 460, 2),
        (2, 87, 175, 185, 8.333, 0.1667, 460, 2),
        (3, 175, 262, 243, 11.667, 0.2333, 460, 2),
        (4, 262, 350, 300, 15.0, 0.3, 460, 2),
    ]
    # unscheduled values keep the configured value in every stage
    assert {s.params["drop_path"] for s in result} == {0.2}
    assert result[1].augmenter_params("randaugment") == {"num_layers": 2, "magnitude": pytest.approx(25 / 3)}


def test_per_stage_batch_override_and_size_multiple(progressive):
    result = progressive(epochs=8, final=V2S_FINAL, n_stages=4, base=V2S_BASE, batch_sizes=[512, 512, 384, 256],
                         size_multiple=32)
    assert [s.params["batch_size"] for s in result] == [512, 512, 384, 256]
    assert [s.params["image_size"] for s in result] == [128, 192, 256, 300 // 32 * 32 + (32 if 300 % 32 >= 16 else 0)]
    assert [(s.start_epoch, s.end_epoch) for s in result] == [(0, 2), (2, 4), (4, 6), (6, 8)]


def test_single_stage_is_the_final_values(progressive):
    one = progressive(epochs=5, final=V2S_FINAL, n_stages=1, base=V2S_BASE)
    assert len(one) == 1 and one[0].params["image_size"] == 300 and one[0].params["dropout"] == 0.3
    single = Registry(autoload=False).get("stage_schedule", "single")(epochs=5, final=V2S_FINAL)
    assert single == [stages.Stage(0, 0, 5, V2S_FINAL)]


def test_bad_progressive_configs(progressive):
    with pytest.raises(UserError) as err:
        progressive(epochs=10, final=V2S_FINAL, base={"randaugment.magnitud": 5})
    assert str(err.value).splitlines()[0] == (
        "progressive.base has key 'randaugment.magnitud', which this run does not configure "
        "(did you mean 'randaugment.magnitude'?); known keys: batch_size, drop_path, dropout, image_size, "
        "randaugment.magnitude, randaugment.num_layers"
    )
    with pytest.raises(UserError, match=r"^progressive.n_stages=5 must be between 1 and the number of epochs \(3\)\n"):
        progressive(epochs=3, final=V2S_FINAL, n_stages=5)
    with pytest.raises(UserError, match=r"^progressive.batch_sizes has 2 entries; it needs one per stage \(4\)\n"):
        progressive(epochs=8, final=V2S_FINAL, batch_sizes=[1, 2])


def test_validate_rejects_gaps():
    bad = [stages.Stage(0, 0, 2), stages.Stage(1, 3, 5)]
    with pytest.raises(UserError, match=r"returned stage 1 covering epochs \[3, 5\); stages must be consecutive"):
        stages.validate(bad, 5, "mine")
    with pytest.raises(UserError, match=r"covers 2 epochs, the run has 5"):
        stages.validate(bad[:1], 5, "mine")
