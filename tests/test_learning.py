"""The tiny models really learn from the image: a small real cell reads colours it could not guess.

The default cell's own learning (400 stage-2 steps, about 5 minutes at 224 px) is measured by the default sweep
and reported in docs/data.md; this test is its cheap guard. It runs the real pipeline (stage 1, stage 2,
generation, the synth_qa scorer) on colour questions about one large object at 112 px, where the image-blind
score is 20%. Measured on the 2-core dev CPU: 100% after 200 stage-2 steps with seeds 0 and 1 (43-47% after 100
steps), about 45 s. A change that cuts the image off from the answer (a merge, mask or position bug) leaves the
cell near the blind score.
"""
from __future__ import annotations

from conftest import compose

COLOUR_ONLY = ("data.question_weights={color_at:1,color_of:1,shape_at:0,shape_of:0,where:0,count:0,size:0,"
               "exists:0,text_present:0,text_read:0,mc_color:0,describe:0}")


def test_small_cell_reads_colours_from_the_image(tmp_path):
    from ablate.run import run_cell

    cfg = compose([
        "resolution=112", "logger=none", "eval.benchmarks=[synth_qa]",
        "data.num_train=400", "data.num_eval=60", "data.count_weights=[1.0]", "data.small_prob=0",
        "data.text_prob=0", "data.turns=[2,2]", COLOUR_ONLY,
        "scale.stage1.max_steps=10", "scale.stage2.max_steps=200",
    ], root=tmp_path)
    row = run_cell(cfg)
    m = row["metrics"]
    acc, blind = m["eval/synth_qa/accuracy"], m["eval/synth_qa/blind_accuracy"]
    assert row["status"] == "complete"
    assert blind < 35, f"the blind score {blind:.1f}% should be near colour chance (17%)"
    assert acc >= blind + 30, (f"synth_qa accuracy {acc:.1f}% vs image-blind {blind:.1f}%: the cell did not learn "
                               "to read colours from the image")
