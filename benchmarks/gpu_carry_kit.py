r"""Builds the kit that travels to the GPU machine beside the working tree.

The lent GPU machine (Python 3.12, JAX and torch with CUDA, no network) has
no keras, no ml-collections, no TensorFlow and no TFDS, and what travels
there is at most 64 MiB in all. This writes `--kit_dir` (default `gpu_kit/`,
git-ignored) with:

    wheels/               what is missing there, for Python 3.12 on manylinux
                          x86_64 (`pip download --only-binary=:all:`): keras
                          and the two of its needs the machine lacks (namex,
                          optree), and ml-collections, which
                          keras_ccmim.training imports; the versions
                          installed here, one of each
    cifar10_subset.npz    CIFAR-10 `train[:20000]` and the held-out
                          `train[45000:]` of the TFDS `cifar10_jpeg` train
                          split, as JPEG bytes (`benchmarks/cifar10_subset.py`)

and prints its size, the working tree's (the files git tracks plus the
untracked ones it does not ignore) and their total against 64 MiB; it fails
(exit 2) above that. It needs TensorFlow and TFDS (here) and pip's network
access to download.

The one command to run on the GPU machine, with `gpu_kit` carried (the
device tool's `carry`), writing everything under `$OUT` in at most 8 files:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --find-links gpu_kit/wheels --target /tmp/site gpu_kit/wheels/*.whl && PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu_run --output_dir=$OUT --cifar_npz=gpu_kit/cifar10_subset.npz 2>&1 | tee $OUT/gpu_run.log

    python -m benchmarks.gpu_carry_kit                      # builds gpu_kit/
    python -m benchmarks.gpu_carry_kit --wheels= --train_images=64   # data only
"""

import importlib.metadata
import os
import shutil
import subprocess
import sys

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_string("kit_dir", os.path.join(REPO, "gpu_kit"), "The folder written (replaced).")
flags.DEFINE_list("wheels", ["keras", "namex", "optree", "ml-collections"],
                  "Distributions to download, at the versions installed here (empty: none).")
flags.DEFINE_string("data_dir", os.path.join(os.path.dirname(REPO), "shared", "data", "tfds"),
                    "TFDS data_dir holding cifar10_jpeg.")
flags.DEFINE_integer("train_images", 20000, "Images of the training part: train[:N].")
flags.DEFINE_string("heldout_split", "train[45000:]", "TFDS split of the held-out part.")
flags.DEFINE_float("limit_mib", 64.0, "What may travel in all, MiB.")

PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
MIB = 2**20


def download_wheels(folder, names):
    """`pip download` of each of `names` at the version installed here, for
    CPython 3.12 on manylinux x86_64, no dependencies; the wheel files."""
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in names]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "--python-version", "3.12", "--implementation",
                    "cp", *platforms, "--dest", folder, *pins], check=True)
    return sorted(os.listdir(folder))


def kit_files(kit):
    """What in an existing `kit` folder this script would not have written."""
    wheels = os.path.join(kit, "wheels")
    foreign = [name for name in os.listdir(kit) if name not in ("wheels", "cifar10_subset.npz")]
    if os.path.isdir(wheels):
        foreign += [os.path.join("wheels", name) for name in os.listdir(wheels)
                    if not name.endswith(".whl")]
    return foreign


def folder_bytes(folder):
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(folder) for name in names)


def working_tree_bytes():
    """Bytes of what travels from the checkout: tracked files, and untracked
    ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO, capture_output=True, check=True)
    paths = {p for p in listed.stdout.decode().split("\0") if p}
    return sum(os.path.getsize(os.path.join(REPO, p)) for p in paths
               if os.path.isfile(os.path.join(REPO, p)))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from benchmarks.cifar10_subset import write_subset_from_tfds

    if not os.path.isdir(os.path.join(FLAGS.data_dir, "cifar10_jpeg")):
        print(f"Error: no cifar10_jpeg under --data_dir={FLAGS.data_dir}; pass the TFDS "
              "data_dir that holds it.", file=sys.stderr)
        return 2
    kit = os.path.abspath(FLAGS.kit_dir)
    if os.path.exists(kit):
        foreign = kit_files(kit)
        if foreign:
            print(f"Error: --kit_dir={kit} holds {foreign[0]}, which this script did not "
                  "write; name another folder.", file=sys.stderr)
            return 2
        shutil.rmtree(kit)  # only what an earlier call wrote
    os.makedirs(os.path.join(kit, "wheels"))
    wheels = download_wheels(os.path.join(kit, "wheels"), FLAGS.wheels) if FLAGS.wheels else []
    subset = write_subset_from_tfds(
        os.path.join(kit, "cifar10_subset.npz"), FLAGS.data_dir,
        {"train": f"train[:{FLAGS.train_images}]", "heldout": FLAGS.heldout_split})
    kit_bytes, tree_bytes = folder_bytes(kit), working_tree_bytes()
    total = kit_bytes + tree_bytes
    for wheel in wheels:
        print(f"wheel {wheel}: {os.path.getsize(os.path.join(kit, 'wheels', wheel)) / MIB:.2f} MiB")
    print(f"data {os.path.basename(subset)}: {os.path.getsize(subset) / MIB:.2f} MiB")
    print(f"kit {kit}: {kit_bytes / MIB:.2f} MiB; working tree: {tree_bytes / MIB:.2f} MiB; "
          f"together {total / MIB:.2f} MiB of {FLAGS.limit_mib:g} MiB")
    if total > FLAGS.limit_mib * MIB:
        print(f"Error: {total / MIB:.2f} MiB is over the {FLAGS.limit_mib:g} MiB that may "
              "travel; lower --train_images.", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    app.run(main)
