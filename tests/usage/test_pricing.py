from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from usage.catalogue import catalogue_sync, read_catalogue
from usage.models import AIModel
from usage.pricing import Prices, Usage, compute_cost


def prices(name: str) -> Prices:
    return Prices.of(AIModel.objects.get(name=name))


@pytest.mark.django_db
def test_seeded_prices_are_perplexitys():
    catalogue_sync()
    assert prices("sonar") == Prices(
        1_000_000, 1_000_000, 0, 0, 0, 0, 0, 5_000_000, 8_000_000, 12_000_000
    )
    assert prices("sonar-pro") == Prices(
        3_000_000, 15_000_000, 0, 0, 0, 0, 0, 6_000_000, 10_000_000, 14_000_000
    )
    assert prices("sonar-reasoning-pro") == Prices(
        2_000_000, 8_000_000, 0, 0, 0, 0, 0, 6_000_000, 10_000_000, 14_000_000
    )
    assert prices("sonar-deep-research") == Prices(
        2_000_000, 8_000_000, 2_000_000, 3_000_000, 5_000_000, 0, 0, 0, 0, 0
    )


@pytest.mark.django_db
def test_costs_match_hand_computed_amounts():
    catalogue_sync()
    # sonar-pro, 1,000 in, 500 out, medium context: $0.003 + $0.0075 + $0.010 = $0.0205
    cost = compute_cost(prices("sonar-pro"), Usage(1000, 500, search_context_size="medium"))
    assert (cost.input, cost.output, cost.request, cost.total) == (3_000, 7_500, 10_000, 20_500)
    # sonar-deep-research: 33 in, 7,000 out, 20,000 citation, 73,000 reasoning, 18 searches
    cost = compute_cost(prices("sonar-deep-research"), Usage(33, 7_000, 20_000, 73_000, 18))
    assert (cost.input, cost.output, cost.citation, cost.reasoning, cost.search) == (
        66,
        56_000,
        40_000,
        219_000,
        90_000,
    )
    assert cost.total == 405_066
    assert cost.as_usage_cost()["total_cost"] == 0.405066


def test_fractional_prices_round_half_up_per_component():
    p = Prices(
        input_per_m=150_000, output_per_m=600_000, request_low_per_k=1
    )  # $0.15/M, $0.60/M, $0.001/K
    assert compute_cost(p, Usage(prompt_tokens=3)).input == 0  # 0.45 micros
    assert compute_cost(p, Usage(prompt_tokens=10)).input == 2  # 1.5 → 2
    assert compute_cost(p, Usage(completion_tokens=5)).output == 3  # 3.0
    assert compute_cost(p, Usage()).request == 0  # 0.001 micros → 0
    assert compute_cost(p, Usage(prompt_tokens=10**9)).input == 150_000_000


@pytest.mark.django_db
def test_sync_models_updates_and_disables_never_deletes(tmp_path: Path):
    catalogue_sync()
    path = tmp_path / "models.toml"
    path.write_text(
        '[models.sonar]\ninput_per_m = "1.5"\noutput_per_m = 1\nrequest_fee_per_k = { low = 5 }\n'
        '[models.my-llama]\nupstream_base_url = "http://vllm:8000/v1"\ninput_per_m = 0.2\noutput_per_m = 0.2\n'
    )
    call_command("sync_models", str(path), stdout=StringIO())
    assert AIModel.objects.get(name="sonar").input_per_m == 1_500_000
    assert AIModel.objects.get(name="my-llama").upstream_base_url == "http://vllm:8000/v1"
    assert not AIModel.objects.get(name="sonar-pro").enabled  # absent: disabled, still there
    seeded = len(read_catalogue().models)
    assert AIModel.objects.count() == seeded + 1
    call_command("sync_models", str(path), stdout=StringIO())  # idempotent
    assert AIModel.objects.count() == seeded + 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nonsense = [", "not valid"),
        ("[other]\nx = 1", "line 1: other: unknown table"),
        ("[tools.x]\nfee = 1", "no \\[models"),
        ("[models.a]\ninput_per_m = -1", "cannot be negative"),
        ("[models.a]\nprice = 1", "unknown setting"),
        ("[models.a]\nrate_limit_rpm = 0", "rate_limit_rpm"),
    ],
)
def test_sync_models_rejects_bad_files_and_changes_nothing(tmp_path, text, message):
    catalogue_sync()
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(CommandError, match=message):
        call_command("sync_models", str(path))
    assert AIModel.objects.filter(enabled=True).count() == len(read_catalogue().models)


CATALOGUE_HEAD = """# a catalogue
[models.sonar]
input_per_m = 1

[models."openai/gpt-5.4-mini"]
api = "agent"
upstream_api = "responses"
input_per_m = 0.75
cache_read_per_m = 0.075

[tools.web_search]
fee = 0.0025

"""


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ('[models.x]\ncolour = "red"', r"line 15: models\.x\.colour: unknown setting"),
        ("[models.x]\ninput_per_m = 1\ncache_write_per_m = -2", r"line 16: .*cannot be negative"),
        ('[models.x]\nrate_limit_rpm = "fast"', r"line 15: models\.x\.rate_limit_rpm"),
        ('[models.x]\napi = "images"', r"line 15: models\.x\.api: must be"),
        ('[models.x]\nupstream_api = "grpc"', r"line 15: models\.x\.upstream_api"),
        ("[models.x]\nupstream_model = 5", r"line 15: models\.x\.upstream_model: must be a string"),
        ("[tools.fetch_url]\nfee = -0.5", r"line 15: tools\.fetch_url\.fee: prices cannot be"),
        ("[tools.fetch_url]\nfees = 1", r"line 15: tools\.fetch_url\.fees: unknown setting"),
        ('[presets.fast]\nmodel = "nope"', r"line 15: presets\.fast\.model: unknown model 'nope'"),
        ('[presets.fast]\nmodel = "sonar"', r"line 15: .*'sonar' is not served on the Agent API"),
        (
            '[presets.fast]\nmodel = "openai/gpt-5.4-mini"\ntools = ["web_search", "sandbox"]',
            r"line 16: presets\.fast\.tools: unknown tool 'sandbox'",
        ),
        (
            '[presets.fast]\nmodel = "openai/gpt-5.4-mini"\nmax_steps = "3"',
            r"line 16: presets\.fast\.max_steps: must be a whole number",
        ),
        ("\n\n[presets.fast]\n", r"line 16: presets\.fast: needs the model"),
        ('[tools.sandbox]\nfee = "lots"', r"line 15: tools\.sandbox\.fee"),
        (
            '[models."a/b"]\n  input_per_m = "1.0000001"',
            r"line 15: models\.a/b\.input_per_m: .*six",
        ),
        ("[limits.sonar]\nrpm = [1, 2]", r"line 15: limits\.sonar\.rpm: must list 6 limits"),
        ("[limits.agent]\nrpm = [1, 2, 3, 4, 5, 0]", r"line 15: limits\.agent\.rpm: must be whole"),
        ('[limits.agent]\nrpm = "fast"', r"line 15: limits\.agent\.rpm: must be whole"),
        ("[limits.agent]\nrps = 1\nqps = 1", r"line 16: limits\.agent\.qps: rps and qps"),
        ("[limits.agent]\ntpm = 5", r"line 15: limits\.agent\.tpm: unknown setting"),
        ("[limits.nope]\nrpm = 5", r"line 14: limits\.nope: unknown API family"),
        ('[limits."openai/gpt-5.4-mini"]\nrpm = 5', r"line 14: .*unknown API family"),
        ("[limits.search]\nburst = 10", r"line 14: limits\.search: needs rpm"),
        ("[limits.search]\nrps = 50\nburst = 10", r"line 16: limits\.search\.burst: must equal"),
        ('[models."e-1"]\napi = "embeddings"', r"line 14: models\.e-1: .*needs its dimensions"),
        (
            '[models."e-1"]\napi = "embeddings"\ndimensions = 64',
            r"line 16: models\.e-1\.dimensions: must be a whole number ≥ 128",
        ),
        (
            '[models."e-1"]\napi = "embeddings"\ndimensions = 1024\ncontextualized = "yes"',
            r"line 17: models\.e-1\.contextualized: must be true or false",
        ),
        ("[models.x]\ndimensions = 1024", r"line 15: models\.x\.dimensions: is only for embed"),
    ],
)
def test_sync_models_names_the_line_of_a_semantic_error(tmp_path, tail, message):
    catalogue_sync()
    before = sorted(AIModel.objects.values_list("name", "enabled", "input_per_m"))
    path = tmp_path / "bad.toml"
    path.write_text(CATALOGUE_HEAD + tail)
    assert CATALOGUE_HEAD.count("\n") == 13  # the tail's table starts on line 14, its key on 15
    with pytest.raises(CommandError, match=message):
        call_command("sync_models", str(path))
    assert sorted(AIModel.objects.values_list("name", "enabled", "input_per_m")) == before


@pytest.mark.django_db
def test_sync_models_syncs_rate_limits_by_family_and_tier(tmp_path):
    from usage.models import RateLimit

    catalogue_sync()
    agent = RateLimit.objects.get(name="agent")
    assert agent.per_minute == [50, 150, 500, 1000, 2000, 2000]
    assert agent.per_second == [1, 3, 8, 17, 33, 33]
    search = RateLimit.objects.get(name="search")
    assert (search.per_minute, search.per_second) == (None, [50] * 6)
    assert RateLimit.objects.get(name="sonar-deep-research").per_minute == [5, 10, 20, 40, 60, 100]
    assert RateLimit.objects.get(name="embeddings").published is False
    path = tmp_path / "small.toml"
    path.write_text(CATALOGUE_HEAD + "[limits.sonar]\nrpm = 7\n")
    call_command("sync_models", str(path), stdout=StringIO())
    assert RateLimit.objects.get(name="sonar").per_minute == [7] * 6
    assert not RateLimit.objects.get(name="agent").enabled  # absent: disabled, still there


@pytest.mark.django_db
def test_sync_models_syncs_tools_and_presets(tmp_path):
    from usage.models import Preset, ToolPrice

    catalogue_sync()
    assert ToolPrice.objects.get(name="web_search").fee_per_k == 2_500_000  # $0.0025 each
    fast = Preset.objects.get(name="fast")
    assert (fast.model.name, fast.aliases) == ("openai/gpt-5.6-luna", ["fast-search"])
    assert fast.settings["tools"] == ["web_search"]
    sonar = AIModel.objects.get(name="perplexity/sonar")
    assert (sonar.api, sonar.upstream_api) == ("agent", "responses")
    assert (sonar.cache_read_per_m, sonar.cache_write_per_m) == (62_500, 250_000)
    assert AIModel.objects.get(name="sonar").api == "chat"
    path = tmp_path / "small.toml"
    path.write_text(
        CATALOGUE_HEAD + '[presets.fast]\nmodel = "openai/gpt-5.4-mini"\naliases = ["quick"]\n'
    )
    call_command("sync_models", str(path), stdout=StringIO())
    assert not ToolPrice.objects.get(name="fetch_url").enabled  # absent: disabled, kept
    assert Preset.objects.get(name="fast").model.name == "openai/gpt-5.4-mini"
    assert not Preset.objects.get(name="xhigh").enabled


def test_embeddings_are_priced_per_request_rounded_half_up_once():
    """Prices below a micro-dollar per token: $0.004 per 1M is 0.004 µ$ a token."""
    from usage.pricing import embeddings_cost, embeddings_usage_cost

    small = Prices(input_per_m=4_000)  # pplx-embed-v1-0.6b
    assert [embeddings_cost(small, n).total for n in (0, 124, 125, 374, 375, 1_000, 120_000)] == [
        0, 0, 1, 1, 2, 4, 480,
    ]  # fmt: skip
    big = Prices(input_per_m=50_000)  # pplx-embed-context-v1-4b
    cost = embeddings_cost(big, 120_000)
    assert (cost.input, cost.total) == (6_000, 6_000)
    assert embeddings_usage_cost(cost) == {
        "currency": "USD", "input_cost": 0.006, "total_cost": 0.006,
    }  # fmt: skip
    with pytest.raises(ValueError):
        embeddings_cost(small, -1)


@pytest.mark.django_db
def test_the_catalogue_has_the_embeddings_models():
    catalogue_sync()
    rows = {
        m.name: (m.api, m.input_per_m, m.dimensions, m.contextualized)
        for m in AIModel.objects.filter(api="embeddings")
    }
    assert rows == {
        "pplx-embed-v1-0.6b": ("embeddings", 4_000, 1024, False),
        "pplx-embed-v1-4b": ("embeddings", 30_000, 2560, False),
        "pplx-embed-context-v1-0.6b": ("embeddings", 8_000, 1024, True),
        "pplx-embed-context-v1-4b": ("embeddings", 50_000, 2560, True),
    }
