"""The public HH-RLHF release's parameters work end to end through stage 1 on the real data."""


from depsim.params import load_release
from depsim.sample import build_prefixes, conversion_reports




def test_public_release_samples_real_prefixes(tmp_path):
    rel = load_release("params/public-hh-rlhf.yaml")
    assert rel.public and rel.simulated
    prefixes, pii = build_prefixes(rel, tmp_path)
    conv = conversion_reports(rel, tmp_path).set_index("pool")
    assert conv.loc["previous", "rows"] == 2312 and conv.loc["previous", "quarantined"] == 0
    assert conv.loc["challenging", "rows"] == 400
    assert (prefixes["pool"] == "previous").sum() == rel.sampling.n
    assert prefixes["prefix_id"].is_unique
    # every prefix ends at a user turn, as sampled
    import json
    assert all(json.loads(m)[-1]["role"] == "user" for m in prefixes["messages"])
