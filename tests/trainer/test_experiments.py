"""The experiment grid's specs and the report's paired comparison (no training: hand-made results)."""
import pytest
import torch

from trainer.experiments import TABLE2_ARCHS, grid
from trainer.report import paired_diff, report, select_on_validation


def test_kuairand_edim_suite_runs_every_arch_at_two_sizes():
    specs = grid(["kuairand_edim"], [0, 1], large_edim=32)
    assert len(specs) == 2 * 2 * len(TABLE2_ARCHS)
    assert {s.group for s in specs} == {"kuairand_e16", "kuairand_e32"}
    assert all(s.dataset == "kuairand" and s.model == {"edim": int(s.group.split("_e")[1])} for s in specs)
    assert len({s.run_id for s in specs}) == len(specs)  # resumable grid: ids must not collide
    with pytest.raises(ValueError, match="unknown suite"):
        grid(["kuairand_edims"], [0])
    large = grid(["users1-2999_large"], [4], large_edim=48)
    assert {(s.group, s.dataset, s.model["edim"], s.seed) for s in large} == {("users1-2999_e48", "ml-1m-users1-2999", 48, 4)}
    assert {s.arch for s in large} == {"t2diff", "sasrec", "gru4rec", "mixed_attention"}


def _res(group, label, seed, r100):
    return {"spec": {"group": group, "label": label, "seed": seed}, "dataset": "kuairand",
            "test": {"n": 100, "recall@10": r100 / 4, "recall@100": r100},
            "val": {"recall@100": r100}, "config": {"select_metric": "recall@100"},
            "best_epoch": 3, "wall_s": 1.0, "test_infer_ms_per_user": 0.1, "history": []}


def test_paired_difference_against_the_best_other_row(tmp_path):
    t2 = [0.30, 0.20, 0.25]
    gru = [0.28, 0.22, 0.21]  # best other row by mean (0.2367 vs sasrec 0.20)
    results = ([_res("g", "t2diff", s, v) for s, v in enumerate(t2)]
               + [_res("g", "gru4rec", s, v) for s, v in enumerate(gru)]
               + [_res("g", "sasrec", s, 0.20) for s in range(3)]
               + [_res("g", "gru4rec", 7, 0.9)])  # a seed T2Diff lacks: not paired
    d = paired_diff(results, "g", "t2diff", "gru4rec", "recall@100")
    assert d == pytest.approx([0.02, -0.02, 0.04])
    md = report(results, tmp_path)
    # mean +0.0133, SE = std([.02, -.02, .04], ddof=1) / sqrt(3) = 0.0306 / 1.732 = 0.0176
    assert "T2Diff − gru4rec (best other row) on recall@100, paired by seed: +0.0133 ± 0.0176" in md
    assert "T2Diff higher in 2 of 3 seeds" in md


def test_diffurec_suite_and_its_paired_line(tmp_path):
    specs = grid(["diffurec"], [0])
    assert {(s.group, s.dataset) for s in specs} == {("diffurec", "ml-1m"), ("diffurec_u", "ml-1m-users1-2999"),
                                                    ("diffurec_k", "kuairand")}
    assert {s.arch for s in specs} == {"t2diff", "diffurec", "sasrec", "gru4rec"} and len(specs) == 24
    assert {s.label for s in specs if s.model} == {"diffurec λ=0 (no diffusion)", "sasrec tied", "gru4rec tied",
                                                   "t2diff tied"}
    assert len({s.run_id for s in specs}) == 24
    results = ([_res("d", "t2diff", s, v) for s, v in enumerate([0.30, 0.20, 0.25])]
               + [_res("d", "gru4rec", s, 0.26) for s in range(3)]
               + [_res("d", "sasrec", s, v) for s, v in enumerate([0.20, 0.22, 0.24])]
               + [_res("d", "diffurec", s, v) for s, v in enumerate([0.25, 0.21, 0.20])]
               + [_res("d", "t2diff tied", s, v) for s, v in enumerate([0.31, 0.27, 0.29])])
    md = report(results, tmp_path)
    # the variant against the best non-T2Diff row (gru4rec 0.26): (+0.05, +0.01, +0.03), SE 0.0115; 0.29/0.26 - 1
    assert ("t2diff tied − gru4rec (best non-T2Diff row; +11.5 % on the mean) on recall@100, paired by seed: "
            "+0.0300 ± 0.0115") in md
    # best other row is "t2diff tied"; diffurec gets its own line: (+0.05, -0.01, +0.05), SE 0.02
    assert "T2Diff − t2diff tied (best other row) on recall@100" in md
    assert "T2Diff − diffurec on recall@100, paired by seed: +0.0300 ± 0.0200" in md
    # and SASRec, the target's baseline: (+0.10, -0.02, +0.01), mean +0.03, SE sqrt(0.0039 / 3)
    assert "T2Diff − sasrec on recall@100, paired by seed: +0.0300 ± 0.0361" in md
    assert "T2Diff higher in 2 of 3 seeds" in md


def test_kuairand_tune_gives_every_arch_the_same_settings():
    specs = grid(["kuairand_tune"], [3])
    per_arch = {a: [s for s in specs if s.arch == a] for a in TABLE2_ARCHS}
    assert {len(v) for v in per_arch.values()} == {6}
    settings = {a: sorted(s.label.split(" | ")[1] for s in v) for a, v in per_arch.items()}
    assert len({tuple(v) for v in settings.values()}) == 1  # same grid for every arch
    s = next(s for s in specs if s.label == "t2diff | lr=0.01 dropout=0.2")
    assert s.train == {"lr": 0.01} and s.model == {"dropout": 0.2} and s.dataset == "kuairand"


@pytest.mark.parametrize("suite,dataset", [("users1-2999_tune", "ml-1m-users1-2999"), ("table2_tune", "ml-1m")])
def test_ml1m_tune_suites_search_one_grid_around_the_official_lr(suite, dataset):
    specs = grid([suite], [0, 1])
    assert {s.arch for s in specs} == {"t2diff", "sasrec", "gru4rec"} and {s.dataset for s in specs} == {dataset}
    per_arch = {a: sorted(s.label.split(" | ")[1] for s in specs if s.arch == a and s.seed == 0)
                for a in ("t2diff", "sasrec", "gru4rec")}
    assert len({tuple(v) for v in per_arch.values()}) == 1 and len(per_arch["t2diff"]) == 8
    assert "lr=0.002 dropout=0" in per_arch["sasrec"]  # the official ML-1M setting is one of the candidates
    assert len({s.run_id for s in specs}) == len(specs) == 48  # 3 archs x 8 settings x 2 seeds, no repeats


def test_ml1m_tune_edge_extends_both_grids_in_their_own_groups():
    base, edge = grid(["users1-2999_tune", "table2_tune"], [0]), grid(["ml1m_tune_edge"], [0])
    assert {(s.group, s.dataset) for s in edge} == {(s.group, s.dataset) for s in base}  # selection spans both
    assert not {s.run_id for s in edge} & {s.run_id for s in base} and len(edge) == 2 * 3 * 2
    assert {s.label.split(" | ")[1] for s in edge} == {"lr=0.02 dropout=0", "lr=0.05 dropout=0"}
    assert {s.train["lr"] for s in edge} == {0.02, 0.05} and max(s.train["lr"] for s in base) == 0.01


def test_ml1m_tuned_runs_each_arch_at_its_chosen_setting():
    specs = grid(["ml1m_tuned"], [3, 4])
    assert len(specs) == 2 * 3 * 2 and {s.group for s in specs} == {"users1-2999_tuned", "table2_tuned"}
    by = {(s.dataset, s.label, s.seed): s for s in specs}
    t = by[("ml-1m", "t2diff", 3)]
    assert t.arch == "t2diff" and t.train == {"lr": 0.005} and t.model == {"dropout": 0.0}
    assert by[("ml-1m", "gru4rec", 4)].train == {"lr": 0.05}
    assert {by[("ml-1m-users1-2999", a, 3)].train["lr"] for a in ("t2diff", "sasrec", "gru4rec")} == {0.01}


def test_ml1m_tuned_ablation_runs_the_ablations_at_t2diffs_setting_beside_ml1m_tuned(tmp_path):
    specs, tuned = grid(["ml1m_tuned_ablation"], [3]), grid(["ml1m_tuned"], [3])
    assert {s.label for s in specs} == {"t2diff_no_dp", "mixed_attention"} and len(specs) == 4
    assert {s.group for s in specs} == {s.group for s in tuned}  # one table per data set with the tuned rows
    assert not {s.run_id for s in specs} & {s.run_id for s in tuned}
    t2 = {s.dataset: (s.train, s.model) for s in tuned if s.arch == "t2diff"}
    assert all((s.train, s.model) == t2[s.dataset] for s in specs)  # the full model's recipe, per data set
    assert {s.train["lr"] for s in specs if s.dataset == "ml-1m"} == {0.005}
    # the report pairs T2Diff with each ablation (what the diffusion module / drift preparation add)
    results = ([_res("t", "t2diff", s, v) for s, v in enumerate([0.30, 0.20, 0.25])]
               + [_res("t", "gru4rec", s, 0.40) for s in range(3)]
               + [_res("t", "mixed_attention", s, v) for s, v in enumerate([0.28, 0.21, 0.20])]
               + [_res("t", "t2diff_no_dp", s, v) for s, v in enumerate([0.30, 0.22, 0.23])])
    md = report(results, tmp_path)
    # (+0.02, -0.01, +0.05): mean +0.02, SE std([.02, -.01, .05], ddof=1) / sqrt(3) = 0.03 / 1.732 = 0.0173
    assert "T2Diff − mixed_attention on recall@100, paired by seed: +0.0200 ± 0.0173" in md
    # (0, -0.02, +0.02): mean 0, SE 0.02 / 1.732 = 0.0115; higher in 1 of 3
    assert "T2Diff − t2diff_no_dp on recall@100, paired by seed: +0.0000 ± 0.0115 (standard error; T2Diff higher in 1 of 3" in md


def test_ml1m_tuned_full_is_ml1m_tuned_without_early_stopping():
    full, tuned = grid(["ml1m_tuned_full"], [3]), grid(["ml1m_tuned"], [3])
    assert len(full) == len(tuned) == 6 and not {s.run_id for s in full} & {s.run_id for s in tuned}
    assert {s.group for s in full} == {"users1-2999_tuned_full", "table2_tuned_full"}
    same = {(s.dataset, s.arch): (s.train["lr"], s.model) for s in tuned}
    assert all(s.train["patience"] is None and (s.train["lr"], s.model) == same[(s.dataset, s.arch)] for s in full)


def test_ml1m_tuned_ablation_full_and_probe_suites():
    full, abl = grid(["ml1m_tuned_ablation_full"], [3]), grid(["ml1m_tuned_ablation"], [3])
    assert {s.group for s in full} == {"users1-2999_tuned_full", "table2_tuned_full"}  # beside ml1m_tuned_full
    assert not {s.run_id for s in full} & {s.run_id for s in abl + grid(["ml1m_tuned_full"], [3])}
    recipe = {(s.dataset, s.arch): (s.train["lr"], s.model) for s in abl}
    assert all(s.train["patience"] is None and (s.train["lr"], s.model) == recipe[(s.dataset, s.arch)] for s in full)
    probe = grid(["ml1m_tuned_probe"], [3, 4])
    assert len(probe) == 2 * 2 * 2 and {s.arch for s in probe} == {"t2diff", "t2diff_no_dp"}
    assert {s.group for s in probe} == {"users1-2999_tuned_probe", "table2_tuned_probe"}
    t2 = {s.dataset: s.train["lr"] for s in grid(["ml1m_tuned"], [3]) if s.arch == "t2diff"}
    assert all(s.train == {"lr": t2[s.dataset], "probe_next": True} for s in probe)
    official = grid(["probe_official"], [0])  # the official recipe: no lr / model override, probe on
    assert {s.dataset for s in official} == {"kuairand", "ml-1m-users1-2999", "ml-1m"}
    assert all(s.arch == "t2diff" and s.train == {"probe_next": True} and s.model == {} for s in official)
    assert len({s.run_id for s in official + probe}) == len(official) + len(probe)
    zero = grid(["zero_out"], [0])  # beside probe_official's T2Diff rows (same groups, its own label)
    zt = [s for s in zero if s.arch == "t2diff"]
    assert {s.group for s in zt} == {s.group for s in official} and {s.label for s in zt} == {"t2diff zero-out"}
    assert all(s.model == {"unet_zero_out": True} and s.train == {"probe_next": True} for s in zt)
    assert {(s.dataset, s.arch) for s in zero if s.arch != "t2diff"} == {("kuairand", "gru4rec"), ("kuairand", "sasrec")}
    assert not {s.run_id for s in zero} & {s.run_id for s in official}


def test_select_on_validation_chooses_by_validation_not_test(tmp_path):
    def run(label, seed, val, test):
        r = _res("tune", label, seed, test)
        r["val"] = {"recall@100": val}
        return r
    results = []
    for s in range(3):
        # t2diff: setting "a" is better on validation, "b" on test: "a" must be chosen
        results += [run("t2diff | a", s, 0.30, 0.20 + 0.01 * s), run("t2diff | b", s, 0.10, 0.40),
                    run("gru4rec | a", s, 0.25, 0.22), run("gru4rec | b", s, 0.26, 0.19 + 0.02 * s),
                    run("sasrec | a", s, 0.20, 0.14 + 0.01 * s)]
    sel = {o["arch"]: o for o in select_on_validation(results, "tune")}
    assert sel["t2diff"]["label"] == "t2diff | a" and sel["gru4rec"]["label"] == "gru4rec | b"
    assert sel["t2diff"]["n_settings"] == 2 and sel["t2diff"]["val"] == pytest.approx(0.30)
    assert sel["t2diff"]["test"]["recall@100"] == pytest.approx([0.20, 0.21, 0.22])
    md = report(results, tmp_path)
    assert "| t2diff | a | 2 | 0.3000 | 0.0525 ± 0.0025 | 0.2100 ± 0.0100 |" in md  # recall@10, recall@100
    # chosen t2diff (0.20, 0.21, 0.22) - chosen gru4rec (0.19, 0.21, 0.23) = (+0.01, 0, -0.01)
    gru = next(line for line in md.splitlines() if line.startswith("Chosen T2Diff − chosen gru4rec (best other; "))
    assert "on recall@100, paired by seed: +0.0000 ± 0.0058 (standard error" in gru
    # and a line for every other arch, weaker ones after: (0.20, 0.21, 0.22) - (0.14, 0.15, 0.16); 0.21 / 0.15 = 1.4
    sas = md.index("Chosen T2Diff − chosen sasrec (+40.0 % on the mean) on recall@100, paired by seed: +0.0600 ± 0.0000")
    assert md.index(gru) < sas
    assert (tmp_path / "val_curves.png").stat().st_size > 0
    # the search rows' labels stay one cell each, and no row is compared with the best row *by test score*
    assert "| t2diff \\| b | 3 | 0.1000 ± 0.0000 | 0.4000 ± 0.0000 |" in md
    assert "best non-T2Diff row" not in md


def test_ml1m_tuned_token_suites_run_the_x_n_token_at_t2diffs_setting_beside_the_tuned_rows():
    from trainer.experiments import TOKEN_LABEL

    for suite, base in (("ml1m_tuned_token", "ml1m_tuned"), ("ml1m_tuned_token_full", "ml1m_tuned_full")):
        specs, tuned = grid([suite], [3]), grid([base], [3])
        assert len(specs) == 2 and {s.label for s in specs} == {TOKEN_LABEL}
        assert {s.group for s in specs} == {s.group for s in tuned}  # into the tuned tables, own row
        assert not {s.run_id for s in specs} & {s.run_id for s in tuned}
        t2 = {s.dataset: s for s in tuned if s.arch == "t2diff"}
        for s in specs:
            assert s.arch == "mixed_attention" and s.model == {**t2[s.dataset].model, "extra": {"next_token": "last"}}
            assert s.train == t2[s.dataset].train  # T2Diff's lr, and no early stop in the _full suite
    assert all(s.train["patience"] is None for s in grid(["ml1m_tuned_token_full"], [3]))


def test_kuairand_tuned_suites_rerun_kuairand_tunes_choice_with_the_variants_beside():
    from trainer.experiments import TOKEN_LABEL

    tuned = grid(["kuairand_tuned"], [10])  # kuairand_tune's choice per arch (offline.md, eleventh session)
    assert {(s.arch, s.train["lr"], s.model["dropout"]) for s in tuned} == {
        ("t2diff", 0.001, 0.0), ("sasrec", 0.01, 0.2), ("gru4rec", 0.001, 0.2)}
    assert {(s.group, s.dataset) for s in tuned} == {("kuairand_tuned", "kuairand")}
    variants = grid(["kuairand_tuned_ablation", "kuairand_tuned_token"], [10])
    assert [s.label for s in variants] == ["t2diff_no_dp", "mixed_attention", TOKEN_LABEL]
    assert all(s.group == "kuairand_tuned" and s.train == {"lr": 0.001} for s in variants)  # T2Diff's setting
    assert variants[-1].model == {"dropout": 0.0, "extra": {"next_token": "last"}}
    full = grid(["kuairand_tuned_full", "kuairand_tuned_token_full"], [10])
    assert {s.group for s in full} == {"kuairand_tuned_full"} and all(s.train["patience"] is None for s in full)
    official = grid(["kuairand_token"], [10])  # the official recipe (no overrides), into the kuairand table
    assert [(s.group, s.label, s.arch, s.model, s.train) for s in official] == [
        ("kuairand", TOKEN_LABEL, "mixed_attention", {"extra": {"next_token": "last"}}, {})]
    kinds = grid(["kuairand_token_kinds"], [10])
    assert [(s.group, s.arch, s.model, s.train) for s in kinds] == [
        ("kuairand", "mixed_attention", {"extra": {"next_token": k}}, {}) for k in ("noise", "learned")]
    tuned_kinds = grid(["kuairand_tuned_token_kinds"], [10])
    assert [s.model for s in tuned_kinds] == [{"dropout": 0.0, "extra": {"next_token": k}} for k in ("noise", "learned")]
    ids = [s.run_id for s in tuned + variants + full + official + kinds + tuned_kinds + grid(["kuairand"], [10])]
    assert len(set(ids)) == len(ids)
    for bad in ("kuairand_tuned_tokenx", "kuairand_tuned_probe", "kuairand_tuned__full", "kuairand_ablation"):
        with pytest.raises(ValueError, match="unknown suite"):
            grid([bad], [0])


def test_report_pairs_a_mixed_attention_variant_with_mixed_attention_and_t2diff(tmp_path):
    from trainer.experiments import TOKEN_LABEL

    results = []
    for s, (t2, ma, tok) in enumerate([(0.24, 0.22, 0.25), (0.25, 0.23, 0.24), (0.23, 0.22, 0.25)]):
        results += [_res("k", "t2diff", s, t2), _res("k", "mixed_attention", s, ma), _res("k", TOKEN_LABEL, s, tok)]
    md = report(results, tmp_path)
    # token - mixed: (+0.03, +0.01, +0.03); T2Diff - token: (-0.01, +0.01, -0.02)
    assert (f"{TOKEN_LABEL} − mixed_attention on recall@100, paired by seed: +0.0233 ± 0.0067 "
            "(standard error; the variant higher in 3 of 3 seeds)") in md
    assert (f"T2Diff − {TOKEN_LABEL} on recall@100, paired by seed: -0.0067 ± 0.0088 "
            "(standard error; T2Diff higher in 1 of 3 seeds)") in md


def test_kuairand_structure_tune_gives_each_arch_six_of_its_own_structures_at_its_tuned_setting(monkeypatch):
    from t2diff.model import build_model
    from t2diff.model.config import ModelConfig
    from trainer import experiments
    from trainer.experiments import TUNED, structure_label

    specs = grid(["kuairand_structure_tune"], [0, 1])
    assert len({s.run_id for s in specs}) == len(specs) == 2 * 3 * 6
    assert {s.group for s in specs} == {"kuairand_structure_tune"} and {s.dataset for s in specs} == {"kuairand"}
    defaults = {"t2diff": "session_len=10 num_blocks=1", "sasrec": "num_blocks=1 num_heads=2",
                "gru4rec": "num_blocks=1 gru_hidden=8"}  # the structure every earlier KuaiRand run used
    for arch, lr_dropout in TUNED["kuairand"].items():
        mine = [s for s in specs if s.arch == arch and s.seed == 0]
        assert len(mine) == 6 and {(s.train["lr"], s.model["dropout"]) for s in mine} == {lr_dropout}
        assert f"{arch} | {defaults[arch]}" in {s.label for s in mine}
        # each setting reaches the network: six settings, six different parameter counts
        sizes = set()
        for s in mine:
            model = build_model(ModelConfig(arch=arch, num_items=50, num_tags=5, **s.model),
                                torch.zeros(51, 1, dtype=torch.long))
            n = sum(p.numel() for p in model.parameters())
            # the session length k and the head count change no parameter count: check that they reach the network
            if arch == "t2diff":
                sizes.add((n, model.user_tower.k))
            elif arch == "sasrec":
                sizes.add((n, model.blocks[0].h))
            else:
                sizes.add(n)
        assert len(sizes) == 6
    gru = next(s for s in specs if s.label == "gru4rec | num_blocks=2 gru_hidden=16")
    assert gru.model == {"dropout": 0.2, "num_blocks": 2, "extra": {"gru_hidden": 16}}
    # the search's recorded choice is one of the searched settings and not the default (kuairand_tuned has that)
    for arch, st in experiments.STRUCTURE_TUNED.items():
        assert st in experiments.STRUCTURE_GRID[arch] and structure_label(arch, st) != f"{arch} | {defaults[arch]}"
    # the confirmation suite needs the search's choice, then puts each arch's choice beside kuairand_tuned's rows
    monkeypatch.setattr(experiments, "STRUCTURE_TUNED", {})
    with pytest.raises(ValueError, match="STRUCTURE_TUNED"):
        grid(["kuairand_structure_tuned"], [30])
    monkeypatch.setattr(experiments, "STRUCTURE_TUNED", {"t2diff": {"session_len": 5},
                                                         "gru4rec": {"extra": {"gru_hidden": 32}}})
    chosen = grid(["kuairand_structure_tuned"], [30])
    assert [(s.group, s.label, s.model, s.train) for s in chosen] == [
        ("kuairand_tuned", "t2diff structure-tuned", {"dropout": 0.0, "session_len": 5}, {"lr": 0.001}),
        ("kuairand_tuned", "gru4rec structure-tuned", {"dropout": 0.2, "extra": {"gru_hidden": 32}}, {"lr": 0.001})]
    assert not {s.run_id for s in chosen} & {s.run_id for s in grid(["kuairand_tuned"], [30])}


def test_report_pairs_a_structure_tuned_row_with_its_arch_and_t2diffs_with_the_best_baseline(tmp_path):
    results = []
    for s, (t2, t2s, gru, grus) in enumerate([(0.24, 0.25, 0.25, 0.26), (0.23, 0.25, 0.24, 0.24), (0.22, 0.24, 0.25, 0.25)]):
        results += [_res("k", "t2diff", s, t2), _res("k", "t2diff structure-tuned", s, t2s),
                    _res("k", "gru4rec", s, gru), _res("k", "gru4rec structure-tuned", s, grus)]
    md = report(results, tmp_path)
    # t2diff structure-tuned − t2diff: (+0.01, +0.02, +0.02); gru4rec's: (+0.01, 0, 0)
    assert ("t2diff structure-tuned − t2diff on recall@100, paired by seed: +0.0167 ± 0.0033 "
            "(standard error; the tuned structure higher in 3 of 3 seeds)") in md
    assert "gru4rec structure-tuned − gru4rec on recall@100, paired by seed: +0.0033 ± 0.0033" in md
    # T2Diff's tuned structure against the strongest baseline row, whichever structure it has (gru4rec tuned 0.25)
    assert ("t2diff structure-tuned − gru4rec structure-tuned (best non-T2Diff row; -1.3 % on the mean) on "
            "recall@100, paired by seed: -0.0033 ± 0.0067") in md  # (-0.01, +0.01, -0.01)


def test_load_results_can_drop_failed_runs(tmp_path):
    import json

    from trainer.experiments import load_results

    ok, failed = _res("g", "t2diff", 0, 0.2), {"spec": {"group": "g", "label": "sasrec", "seed": 0}, "error": "boom"}
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(ok) + "\n\n" + json.dumps(failed) + "\n")
    assert load_results(path) == [ok, failed]
    assert load_results(path, finished_only=True) == [ok]
    assert load_results(tmp_path / "missing.jsonl", finished_only=True) == []
