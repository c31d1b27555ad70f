"""Omniglot few-shot classification: loader, splits, the one-step env and its batched version,
class-balanced shots, the paper's models under vmap, and a short run that learns."""

from __future__ import annotations

import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from PIL import Image

import envs.omniglot_data as omniglot_data
from envs.checker import check_task_family
from envs.omniglot import OmniglotEnv, OmniglotTask, OmniglotVectorEnv
from envs.omniglot_data import OmniglotDataError, load_omniglot, split_alphabets
from maml_rl.adaptation import adapted_losses, model_params
from maml_rl.cli import train_main
from maml_rl.config import ConfigError, load_config
from maml_rl.episodes import ShotBatch
from maml_rl.evaluation import batched_metric
from maml_rl.objectives import cross_entropy_loss
from maml_rl.policies import ConvClassifier, RegressionMLP, build_model
from maml_rl.sampling import SupervisedSampler, split_shots
from maml_rl.trainer import Trainer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"
SHARED_ZIPS = [SHARED / f"images_background_small{k}.zip" for k in (1, 2)]


def _write_alphabets(root: Path, characters: dict[str, int], drawings: int, seed: int = 0):
    """Omniglot's layout with tiny 1-bit PNGs: every character is a random 5x5 pattern (scaled
    x4); drawing d flips pixel d (so that drawings differ) and a few random pixels after the
    first ``drawings`` (so that they differ unpredictably)."""
    rng = np.random.default_rng(seed)
    for alphabet, count in characters.items():
        for c in range(1, count + 1):
            folder = root / alphabet / f"character{c:02d}"
            folder.mkdir(parents=True)
            prototype = rng.random(25) < 0.4
            for d in range(1, drawings + 1):
                noise = rng.random(25) < 0.08
                noise[:drawings] = np.arange(drawings) == d - 1
                pattern = (prototype ^ noise).reshape(5, 5)
                pixels = np.kron(pattern, np.ones((4, 4), dtype=bool))
                Image.fromarray(~pixels).convert("1").save(folder / f"{c:04d}_{d:02d}.png")


def _zip_folder(folder: Path, archive: Path, prefix: str) -> None:
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(folder.rglob("*.png")):
            z.write(path, f"{prefix}/{path.relative_to(folder).as_posix()}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """Five alphabets of 3-4 characters with 4 drawings each, as a folder and as a zip."""
    root = tmp_path_factory.mktemp("omniglot")
    folder = root / "images_background"
    _write_alphabets(folder, {"Alpha": 4, "Beta": 3, "Gamma": 3, "Delta": 3, "Epsilon": 3}, 4)
    _zip_folder(folder, root / "images_background.zip", "images_background")
    return {"folder": folder, "zip": root / "images_background.zip", "cache": root / "cache"}


@pytest.fixture(scope="module")
def tiny_kwargs(tiny) -> dict:
    return {"data_root": str(tiny["zip"]), "cache_dir": str(tiny["cache"]), "ways": 3}


def test_loader_reads_a_folder_and_its_zip_alike(tiny):
    from_folder = load_omniglot(tiny["folder"], cache_dir=tiny["cache"])
    from_zip = load_omniglot(tiny["zip"], cache_dir=tiny["cache"])
    assert from_folder.images.shape == (16, 4, 28, 28) and from_folder.images.dtype == np.uint8
    assert from_folder.alphabet_names == ["Alpha", "Beta", "Delta", "Epsilon", "Gamma"]
    assert list(from_folder.counts) == [4] * 16
    np.testing.assert_array_equal(from_folder.images, from_zip.images)
    # Inverted as learn2learn / the MAML code: strokes (40% of the pixels here) are bright.
    assert from_folder.images.max() == 255 and np.mean(from_folder.images < 128) > 0.5


def test_sources_are_merged_and_deduplicated(tiny, tmp_path):
    extra = tmp_path / "more"
    _write_alphabets(extra, {"Zeta": 2}, 4, seed=1)
    # The folder and its own zip hold the same drawings: each is kept once.
    data = load_omniglot([tiny["folder"], tiny["zip"], extra], cache_dir=tmp_path / "cache")
    assert data.images.shape[:2] == (18, 4)
    assert data.alphabets.count("Zeta") == 2


def test_decoded_images_are_cached_in_one_file(tiny, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_omniglot(tiny["zip"], cache_dir=cache)
    assert len(list(cache.glob("omniglot-28px-*.npz"))) == 1
    monkeypatch.setattr(omniglot_data, "_MEMO", {})

    def no_decoding(*args):
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr(omniglot_data, "_read_images", no_decoding)
    again = load_omniglot(tiny["zip"], cache_dir=cache)
    np.testing.assert_array_equal(first.images, again.images)
    assert again.alphabets == first.alphabets


@pytest.mark.skipif(not all(p.is_file() for p in SHARED_ZIPS),
                    reason=f"the shared Omniglot archives are not in {SHARED}")
def test_shared_background_splits(tmp_path):
    data = load_omniglot(SHARED_ZIPS, cache_dir=tmp_path)
    # Two splits of 5 alphabets each with Greek and Latin in both: 8 alphabets, 242 characters.
    assert len(data.alphabet_names) == 8
    assert data.images.shape == (242, 20, 28, 28) and set(data.counts) == {20}
    splits = split_alphabets(data.alphabet_names)
    assert sum(map(len, splits.values())) == 8 and splits["test"] and splits["train"]


def _missing(tmp: Path) -> Path:
    return tmp / "nowhere"


def _empty(tmp: Path) -> Path:
    return tmp


def _png_at_the_top(tmp: Path) -> Path:
    (tmp / "a.png").write_bytes(b"x")
    return tmp


def _not_a_zip(tmp: Path) -> Path:
    (tmp / "notes.txt").write_text("x")
    return tmp / "notes.txt"


def _broken_png(tmp: Path) -> Path:
    (tmp / "A" / "character01").mkdir(parents=True)
    (tmp / "A" / "character01" / "1.png").write_bytes(b"not a png")
    return tmp


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_missing, "does not exist.*ALPHABET/characterNN/\\*.png"),
        (_empty, "holds no .png images.*ALPHABET/characterNN"),
        (_png_at_the_top, "outside ALPHABET/characterNN/"),
        (_not_a_zip, "neither a folder nor a zip"),
        (_broken_png, "cannot read image"),
    ],
)
def test_missing_or_malformed_data_gives_one_clear_line(tmp_path, make, message):
    with pytest.raises(OmniglotDataError, match=message) as info:
        load_omniglot(make(tmp_path), cache_dir=tmp_path / "cache")
    assert "\n" not in str(info.value)


def test_a_bad_data_root_stops_training_with_one_line(tmp_path, capsys):
    status = train_main(["configs/omniglot_5way1shot.yaml", f"env.kwargs.data_root={tmp_path}/x",
                         f"logging.run_root={tmp_path}"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "ALPHABET/characterNN" in err


def test_alphabet_splits_are_disjoint_and_configurable(tiny_kwargs):
    envs_by_split = {s: OmniglotEnv(split=s, **tiny_kwargs) for s in ("train", "val", "test")}
    alphabets = {s: {c.split("/")[0] for c in e.class_names} for s, e in envs_by_split.items()}
    assert not alphabets["train"] & alphabets["test"]
    assert not alphabets["val"] & alphabets["test"]
    assert not alphabets["train"] & alphabets["val"]
    assert envs_by_split["train"].splits == split_alphabets(["Alpha", "Beta", "Gamma", "Delta",
                                                              "Epsilon"])
    chosen = OmniglotEnv(split="test", test_alphabets=["Beta", "Gamma"], **tiny_kwargs)
    assert {c.split("/")[0] for c in chosen.class_names} == {"Beta", "Gamma"}
    assert set(chosen.splits["train"]) == {"Alpha", "Delta", "Epsilon"}
    with pytest.raises(OmniglotDataError, match="unknown alphabet"):
        OmniglotEnv(test_alphabets=["Klingon"], **tiny_kwargs)
    with pytest.raises(OmniglotDataError, match="both val_alphabets and test_alphabets"):
        OmniglotEnv(val_alphabets=["Beta"], test_alphabets=["Beta"], **tiny_kwargs)
    with pytest.raises(OmniglotDataError, match="fewer than ways=20"):
        OmniglotEnv(**{**tiny_kwargs, "ways": 20}, split="test")


def test_rotations_give_four_times_the_classes(tiny_kwargs):
    plain = OmniglotEnv(split="all", rotations=False, **tiny_kwargs)
    rotated = OmniglotEnv(split="all", **tiny_kwargs)
    assert len(plain.class_names) == 16 and len(rotated.class_names) == 64
    task = OmniglotTask(("Alpha/character01/rot0", "Alpha/character01/rot90",
                         "Alpha/character01/rot180"))
    rotated.set_task(task)
    images = [rotated.reset(seed=0)[0][0]] + [rotated.reset()[0][0] for _ in range(2)]
    # Label k shows a drawing of the same character turned k quarter turns (counter-clockwise).
    character = rotated.decode_task(task)[0][0]
    for k, image in enumerate(images):
        drawing = rotated._perms[k, 0]
        expected = rotated.data.images[character, drawing] / np.float32(255)
        np.testing.assert_array_equal(image, np.rot90(expected, k))


def test_each_task_permutes_its_labels(tiny_kwargs):
    env = OmniglotEnv(**tiny_kwargs)
    tasks = env.sample_tasks(300, np.random.default_rng(0))
    assert all(len(set(t.classes)) == 3 and set(t.classes) <= set(env.class_names) for t in tasks)
    labels_of = {}
    for task in tasks:
        for label, name in enumerate(task.classes):
            labels_of.setdefault(name, set()).add(label)
    # A class is not tied to a label, and class order is not the split's order.
    assert np.mean([len(v) > 1 for v in labels_of.values()]) > 0.8
    assert any(list(t.classes) != sorted(t.classes) for t in tasks)
    # The task value is small, immutable and survives a round trip through a log.
    assert OmniglotTask(**{"classes": list(tasks[0].classes)}) == tasks[0]
    assert hash(tasks[0]) == hash(OmniglotTask(tasks[0].classes))


def test_one_step_contract(tiny_kwargs):
    env = OmniglotEnv(**tiny_kwargs)
    env.set_task(env.sample_tasks(1, np.random.default_rng(0))[0])
    obs, _ = env.reset(seed=0)
    assert obs.shape == (1, 28, 28) and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    _, reward, terminated, truncated, info = env.step(0)
    assert info["target"] == 0 and reward == 1.0 and terminated and not truncated
    env.reset()
    _, reward, _, _, info = env.step(np.array([5.0, 0.0, 1.0]))  # logits: argmax 0, label 1
    assert info["target"] == 1 and reward == 0.0


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_check_env_and_the_family_checker(tiny_kwargs):
    env = gym.make("maml/Omniglot-v0", **tiny_kwargs)
    for task in env.unwrapped.sample_tasks(3, np.random.default_rng(0)):
        env.unwrapped.set_task(task)
        check_env(env.unwrapped, skip_render_check=True)
    if "maml_test/OmniglotTiny-v0" not in gym.registry:
        gym.register("maml_test/OmniglotTiny-v0", entry_point="envs.omniglot:OmniglotEnv",
                     vector_entry_point="envs.omniglot:OmniglotVectorEnv",
                     max_episode_steps=1, kwargs=tiny_kwargs)
    check_task_family("maml_test/OmniglotTiny-v0", n_tasks=3, seed=0)
    # A family whose data are missing is a finding of the checker, not a crash.
    if "maml_test/OmniglotMissing-v0" not in gym.registry:
        gym.register("maml_test/OmniglotMissing-v0", entry_point="envs.omniglot:OmniglotEnv",
                     max_episode_steps=1, kwargs={**tiny_kwargs, "data_root": "/nonexistent"})
    with pytest.raises(AssertionError, match="cannot make the env: data_root"):
        check_task_family("maml_test/OmniglotMissing-v0")


def test_batched_env_matches_single_env(tiny_kwargs):
    rng = np.random.default_rng(1)
    vec = gym.make_vec("maml/Omniglot-v0", num_envs=4, vectorization_mode="vector_entry_point",
                       **tiny_kwargs)
    assert isinstance(vec, OmniglotVectorEnv)
    tasks = vec.sample_tasks(4, rng)
    vec.set_tasks(tasks)
    singles = []
    for task in tasks:
        single = OmniglotEnv(**tiny_kwargs)
        single.set_task(task)
        singles.append(single)
    # 3 ways x 4 drawings: 20 episodes run through every class's drawings and re-permute them.
    for episode in range(20):
        seed = 100 if episode == 0 else None
        obs, _ = vec.reset(seed=seed)
        actions = rng.integers(0, 3, size=4)
        _, rewards, terminated, _, info = vec.step(actions)
        assert terminated.all()
        for i, single in enumerate(singles):
            x, _ = single.reset(seed=None if seed is None else seed + i)
            _, r, _, _, single_info = single.step(actions[i])
            np.testing.assert_array_equal(obs[i], x)
            assert rewards[i] == r and info["target"][i] == single_info["target"]


def test_support_and_query_are_class_balanced_and_disjoint(tiny_kwargs):
    ways, k, q = 3, 1, 3  # 1 + 3 = all 4 drawings of every class
    sampler = SupervisedSampler("maml/Omniglot-v0", tiny_kwargs, num_tasks=6,
                                shots=ways * (k + q), seed=0)
    tasks = OmniglotEnv(**tiny_kwargs).sample_tasks(6, np.random.default_rng(2))
    for _ in range(2):  # a second draw of the same tasks is balanced too
        support, query = split_shots(sampler.sample(tasks), ways * k)
        assert support.inputs.shape == (6, 3, 1, 28, 28) and query.targets.shape == (6, 9)
        for i in range(6):
            assert torch.bincount(support.targets[i], minlength=ways).tolist() == [k] * ways
            assert torch.bincount(query.targets[i], minlength=ways).tolist() == [q] * ways
            images = torch.cat([support.inputs[i], query.inputs[i]]).flatten(1)
            assert torch.unique(images, dim=0).shape[0] == ways * (k + q), "an image repeats"


def test_sizes_that_are_not_n_way_k_shot_are_refused(tiny_kwargs, tmp_path):
    base = [f"env.kwargs.{k}={v}" for k, v in tiny_kwargs.items()] + [
        "policy.model=conv", "policy.conv_filters=4", "device=cpu", "logging.progress=false",
        "logging.tensorboard=false", "sampling.support_size=3", "sampling.query_size=3",
        "evaluation.support_size=3",
    ]
    config = load_config("configs/omniglot_5way1shot.yaml", [*base, "sampling.support_size=4"])
    with pytest.raises(ConfigError, match="sampling: support_size 4 is not a multiple of ways=3"):
        Trainer(config, tmp_path / "a")
    config = load_config("configs/omniglot_5way1shot.yaml", [*base, "evaluation.query_size=15"])
    with pytest.raises(ConfigError, match=r"evaluation: .* only 4 drawings"):
        Trainer(config, tmp_path / "b")
    config = load_config("configs/omniglot_5way1shot.yaml",
                         [*base, "evaluation.query_size=3", "evaluation.query_batch=2"])
    with pytest.raises(ConfigError, match=r"evaluation\.query_batch: 2 must divide .* size 3"):
        Trainer(config, tmp_path / "d")
    config = load_config("configs/omniglot_5way1shot.yaml",
                         [*base, "evaluation.query_size=6", "evaluation.query_batch=2"])
    with pytest.raises(ConfigError, match=r"query_batch: 2 does not hold every class"):
        Trainer(config, tmp_path / "e")
    config = load_config("configs/omniglot_5way1shot.yaml", [*base, "evaluation.env_kwargs.ways=2"])
    with pytest.raises(ValueError, match=r"evaluation\.env_kwargs: .*changes the action space"):
        Trainer(config, tmp_path / "c")


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("model_kind", ["conv", "mlp"])
def test_vmap_over_tasks_equals_loop_for_the_paper_models(model_kind, first_order):
    # The second-order case caught torch's vmap of the fused batch-norm kernel (policies.BatchNorm).
    torch.set_num_threads(1)
    torch.manual_seed(0)
    shape = (1, 16, 16)  # 16 -> 8 -> 4 -> 2 -> 1 through the four blocks: small and quick
    if model_kind == "conv":
        model = ConvClassifier(shape, 5, filters=6, downsample="max_pool").double()
    else:
        model = RegressionMLP(shape, 5, (16, 8), batch_norm=True).double()
    params = {k: v.detach().clone().requires_grad_() for k, v in model_params(model).items()}
    g = torch.Generator().manual_seed(0)
    data = lambda n: ShotBatch(  # noqa: E731
        inputs=torch.rand(3, n, *shape, generator=g, dtype=torch.float64),
        targets=torch.randint(0, 5, (3, n), generator=g),
    )
    support, query = data(5), data(10)
    results = {}
    for batching in ("vmap", "loop"):
        losses = adapted_losses(model, params, cross_entropy_loss, support, query, [0.4, 0.4],
                                first_order, batching)
        results[batching] = (losses, torch.autograd.grad(losses.mean(), list(params.values())))
    torch.testing.assert_close(results["vmap"][0], results["loop"][0])
    for a, b in zip(results["vmap"][1], results["loop"][1], strict=True):
        torch.testing.assert_close(a, b)
    # Batch statistics, no running averages: nothing is buffered or mutated by a forward pass.
    assert not list(model.buffers())


def test_build_model_from_config():
    space = gym.spaces.Box(0.0, 1.0, (1, 28, 28), np.float32)
    classes = gym.spaces.Discrete(5)
    config = load_config("configs/omniglot_5way1shot.yaml").policy
    conv = build_model(config, space, classes, supervised=True)
    assert isinstance(conv, ConvClassifier)
    assert conv(torch.zeros(7, 1, 28, 28)).shape == (7, 5)
    assert sum(p.numel() for p in conv.parameters()) == 3 * 64 * 64 * 9 + 64 * 9 + 4 * 64 * 3 + 325
    config.model, config.hidden_sizes, config.batch_norm = "mlp", [256, 128, 64, 64], True
    mlp = build_model(config, space, classes, supervised=True)
    assert mlp(torch.zeros(7, 1, 28, 28)).shape == (7, 5)
    with pytest.raises(ValueError, match="RL policies are MLPs"):
        build_model(config, space, classes, supervised=False)
    config.model = "conv"
    with pytest.raises(ValueError, match="needs image observations"):
        build_model(config, gym.spaces.Box(0.0, 1.0, (784,), np.float32), classes, True)


def _learnable_config(root: Path, overrides: list[str]):
    """The 5-way 1-shot config on 6 small synthetic alphabets written under ``root``."""
    _write_alphabets(root / "data", {f"A{i}": 5 for i in range(6)}, 6, seed=3)
    return load_config("configs/omniglot_5way1shot.yaml", [
        f"env.kwargs.data_root={root / 'data'}", f"env.kwargs.cache_dir={root / 'cache'}",
        *overrides])


def test_short_meta_training_beats_chance_after_adaptation(tmp_path_factory):
    root = tmp_path_factory.mktemp("learnable")
    config = _learnable_config(root, [
        "policy.conv_filters=8", "sampling.meta_batch_size=16", "training.iterations=80",
        "evaluation.at_end=false", "evaluation.query_size=25", "logging.progress=false",
        "logging.tensorboard=false", "device=cpu", "seed=0",
        "threads=1",  # small tensors: one thread is fastest
    ])
    trainer = Trainer(config, tmp_path_factory.mktemp("run"))
    trainer.train()
    # The paper's protocol (3 steps with alpha 0.4), 5 query images per class predicted in
    # batches of one per class (the config's query_batch), on the classes
    # of the meta-training alphabets (a test on held-out ones needs more than a short run).
    trainer.learner.eval_family = trainer.family
    curve = trainer.learner.evaluate(60, 3, seed=5)
    assert curve.metric == "accuracy"
    # Chance is 0.2 for 5 ways; measured 0.63-0.69 after 3 steps over seeds 0-2.
    assert curve.mean[0] < 0.3 and curve.mean[1] > curve.mean[0] + 0.1
    assert curve.mean[3] > 0.5, curve.mean
    # The config predicts the query set in batches of 5 (evaluation.query_batch); all 25 at once
    # changes the batch-norm statistics and so the predictions, but not the chance level.
    assert trainer.config.evaluation.query_batch == 5
    trainer.config.evaluation.query_batch = 0
    whole = trainer.learner.evaluate(60, 3, seed=5)
    assert whole.mean[3] > 0.5 and whole.mean[0] < 0.3, whole.mean
    assert not np.allclose(whole.per_task, curve.per_task)


def test_query_batches_are_predicted_on_their_own(tiny_kwargs):
    """``evaluation.query_batch``: with batch norm on batch statistics a prediction depends on its
    batch, so the batched metric is the mean over separately predicted batches, and it differs
    from predicting the whole query set at once."""
    ways = 3
    sampler = SupervisedSampler("maml/Omniglot-v0", tiny_kwargs, num_tasks=1, shots=4 * ways,
                                seed=0)
    tasks = OmniglotEnv(**tiny_kwargs).sample_tasks(1, np.random.default_rng(0))
    _, query = split_shots(sampler.sample(tasks), ways)
    query = ShotBatch(*(v[0] for v in query))  # 3 examples per class, in label order
    torch.manual_seed(0)
    model = ConvClassifier((1, 28, 28), ways, filters=4)
    params = model_params(model)
    batched = batched_metric(cross_entropy_loss, ways)(model, params, query)
    by_hand = torch.stack([
        cross_entropy_loss(model, params, ShotBatch(*(v[i : i + ways] for v in query)))
        for i in range(0, 3 * ways, ways)
    ]).mean()
    torch.testing.assert_close(batched, by_hand)
    whole = cross_entropy_loss(model, params, query)
    assert not torch.allclose(batched, whole), "batch norm should make the batch matter"
    assert batched_metric(cross_entropy_loss, 0) is cross_entropy_loss


def test_query_batch_is_refused_for_rl_families(tmp_path):
    config = load_config("configs/navigation_2d.yaml", [
        "evaluation.query_batch=5", "logging.progress=false", "logging.tensorboard=false",
    ])
    with pytest.raises(ConfigError, match=r"evaluation\.query_batch: 5 applies to supervised"):
        Trainer(config, tmp_path / "run")


def test_evaluation_draws_one_tasks_support_and_predicted_query(tmp_path_factory, capsys):
    from maml_rl.cli import evaluate_main

    root = tmp_path_factory.mktemp("grid")
    config = _learnable_config(root, [
        "policy.conv_filters=4", "sampling.meta_batch_size=2", "training.iterations=2",
        "evaluation.at_end=false", "evaluation.query_size=10", "evaluation.query_batch=5",
        "evaluation.env_kwargs.split=train", "logging.progress=false",
        "logging.tensorboard=false", "device=cpu", "threads=1"])
    Trainer(config, root / "run").train()
    out = root / "out"
    assert evaluate_main([str(root / "run"), "--tasks", "3", "--steps", "1", "--out",
                          str(out)]) == 0
    assert "grid.png" in capsys.readouterr().out
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
