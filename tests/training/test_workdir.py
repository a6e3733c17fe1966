"""A run's directory (mtl_tf.training.workdir): the versions a results.json records."""

from mtl_tf.training import workdir


def test_versions_name_the_commit_of_a_checkout_and_mark_a_dirty_tree(tmp_path):
    import subprocess

    import mtl_tf

    assert workdir.versions()["mtl_tf"] == mtl_tf.__version__
    assert workdir._git_commit(tmp_path) is None  # not a checkout: an installed package
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run(git + ["add", "a.py"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "a"], check=True)
    head = subprocess.run(git[:3] + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert workdir._git_commit(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert workdir._git_commit(tmp_path) == head + "-dirty"
