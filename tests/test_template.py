"""The Flex Template metadata mirrors the pipeline options both ways."""
import json
import pathlib
import re

from realtime_ai.pipelines.options import RealtimeAiOptions
from realtime_ai.pipelines.template import template_metadata

METADATA = pathlib.Path(__file__).resolve().parents[1] / "templates" / "metadata.json"


def test_committed_metadata_is_current():
    assert json.loads(METADATA.read_text()) == template_metadata(), (
        "templates/metadata.json is stale: python -m realtime_ai.pipelines.template "
        "> templates/metadata.json")


def test_every_option_is_a_parameter_and_every_parameter_an_option():
    declared = {p["name"] for p in json.loads(METADATA.read_text())["parameters"]}
    # the options a RealtimeAiOptions view shows, as Beam itself lists them
    ours = set(RealtimeAiOptions([])._visible_option_list())
    assert declared == ours


def test_regexes_accept_the_defaults_and_reject_garbage():
    defaults = RealtimeAiOptions([]).get_all_options()
    for parameter in json.loads(METADATA.read_text())["parameters"]:
        assert parameter["helpText"] and parameter["label"]
        for regex in parameter.get("regexes", []):
            default = defaults[parameter["name"]]
            if default is not None:
                assert re.fullmatch(regex, str(default)), parameter["name"]
            assert not re.fullmatch(regex, "not a value;"), parameter["name"]
    output = [p for p in json.loads(METADATA.read_text())["parameters"] if p["name"] == "output"]
    assert output[0]["isOptional"] is False
