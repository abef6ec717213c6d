"""The step benchmark's table: speeds, ratios, utilisation, memory, callback
overhead and attention kernels, from the workers' results."""

from absl import flags

from benchmarks.step_backend import _median
from benchmarks.step_models import split_variant

FLAGS = flags.FLAGS


def _pct(record):
    value = record.get("utilisation")
    return "-" if value is None else f"{100 * value:.0f}%"


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def summarize(results):
    """Cross-backend comparisons: speeds relative to the best, utilisation of
    the machine's matmul peak (the best backend's float32 matmul)."""
    ok = {r["backend"]: r for r in results if "error" not in r and r.get("variants")}
    summary = {}
    if not ok:
        return summary
    peaks = [r["matmul"].get("float32_gflops") for r in ok.values()]
    peaks = [p for p in peaks if p]
    if peaks and FLAGS.dtype_policy == "float32":
        summary["machine_fp32_matmul_gflops"] = max(peaks)
    for variant in [v for v in FLAGS.variants if split_variant(v)[1] is None]:
        rates = {b: r["variants"][variant]["images_per_second"]
                 for b, r in ok.items() if variant in r["variants"]}
        if not rates:
            continue
        best = max(rates, key=rates.get)
        summary[f"best_{variant}_backend"] = best
        summary[f"{variant}_time_vs_best"] = {b: rates[best] / v for b, v in rates.items()}
        if "machine_fp32_matmul_gflops" in summary:
            summary[f"{variant}_utilisation_of_machine_peak"] = {
                b: r["variants"][variant]["model_gflops_per_second"]
                / summary["machine_fp32_matmul_gflops"]
                for b, r in ok.items() if variant in r["variants"]
            }
        if "jax" in rates and "tensorflow" in rates:
            summary[f"jax_vs_tensorflow_{variant}_time"] = rates["tensorflow"] / rates["jax"]
    return summary


def print_table(results, summary, machine=None):
    if machine:
        print(f"machine: {machine['label']} (this process may use {machine['usable_cores']})")
    header = (
        "| backend | MAE img/s | ccMIM img/s | ccMIM/MAE time | FLOP floor | MAE util | "
        "ccMIM util | fp32 matmul GFLOP/s | bf16 matmul GFLOP/s | peak mem MAE / ccMIM (MB) | "
        "retraces |"
    )
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for r in results:
        if "error" in r:
            print(f"| {r['backend']} | error: {r['error']} |")
            continue
        v = r["variants"]
        mae, cc = v.get("mae", {}), v.get("ccmim", {})
        ratio = r.get("ccmim_to_mae", {})
        mem_key = "peak_gpu_mb" if r["gpu"] else "peak_rss_mb"
        retraces = ",".join(str(x.get("retraces")) for x in (mae, cc) if x)
        print(
            f"| {r['backend']} | {_fmt(mae.get('images_per_second'), '.1f')} | "
            f"{_fmt(cc.get('images_per_second'), '.1f')} | "
            f"{_fmt(ratio.get('median_of_round_ratios'), '.2f')} | "
            f"{_fmt(ratio.get('flop_floor'), '.2f')} | "
            f"{_pct(mae)} | {_pct(cc)} | "
            f"{_fmt(r['matmul'].get('float32_gflops'), '.0f')} | "
            f"{_fmt(r['matmul'].get('bfloat16_gflops'), '.0f')} | "
            f"{_fmt(mae.get(mem_key), '.0f')} / {_fmt(cc.get(mem_key), '.0f')} | {retraces} |"
        )
    if summary:
        print()
        for key, value in summary.items():
            if isinstance(value, dict):
                unit = "x" if key.endswith("_vs_best") else ""
                value = ", ".join(f"{k} {v:.2f}{unit}" for k, v in value.items())
            elif isinstance(value, float):
                value = f"{value:.3f}"
            print(f"{key}: {value}")
    for r in results:
        for variant, record in r.get("variants", {}).items():
            for arm, ratio in record.get("callbacks_to_none", {}).items():
                seconds = _median(record["arm_step_seconds"][arm])
                print(f"{r['backend']} {variant} with the {arm!r} callbacks: "
                      f"{FLAGS.batch_size / seconds:.1f} img/s, step time "
                      f"{ratio:.3f}x that without callbacks (median of the round ratios)")
    for r in results:
        if r.get("variants"):
            print(f"{r['backend']} compile and warm-up seconds: " + ", ".join(
                f"{v} {rec['warmup_seconds']:.1f}" for v, rec in r["variants"].items()))
    for r in results:
        reference = r.get("variants", {}).get("reference_mae")
        if reference:
            ratio = r.get("mae_to_reference", {}).get("median_of_round_ratios")
            print(f"{r['backend']} reference MAE (plain Keras, benchmarks/reference_mae.py): "
                  f"{reference['images_per_second']:.1f} img/s; the library's MAE step takes "
                  f"{_fmt(ratio, '.3f')}x its time (median of the round ratios)")
    for r in results:
        for variant, ratio in r.get("keras_path_to_library", {}).items():
            base, path = split_variant(variant)
            rate = r["variants"][variant]["images_per_second"]
            print(f"{r['backend']} {base} with {path}: {rate:.1f} img/s, step time "
                  f"{ratio['median_of_round_ratios']:.3f}x the library's, CPU time "
                  f"{ratio['cpu_median_of_round_ratios']:.3f}x (medians of the round ratios; "
                  f"rounds: {', '.join(f'{x:.3f}' for x in ratio['round_ratios'])}; CPU: "
                  f"{', '.join(f'{x:.3f}' for x in ratio['cpu_round_ratios'])})")
    for r in results:
        if "error" in r:
            continue
        print(f"{r['backend']}: device {r['device']}, attention kernels: "
              f"{r.get('attention_kernels', 'not checked')}")
