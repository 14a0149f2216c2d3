"""The installed `cas` in a subprocess: init, add, cat, show, errors."""

import json
import subprocess

from tests._helpers import check_store, json_lines, random_bytes, sha256


def test_init_add_cat_show_round_trip(run, tmp_path):
    assert run("init").stdout.decode().startswith("Initialized empty casstore store in ")
    files = {"a.jsonl": json_lines(1_500_000), "b.bin": random_bytes(1_200_000), "c": b""}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    added = run("add", *files).stdout.decode()
    assert added == "".join(f"{sha256(d)}  {n}\n" for n, d in files.items())
    for data in files.values():
        assert run("cat", sha256(data)[:10]).stdout == data
    shown = json.loads(run("show", "--json", sha256(files["a.jsonl"])).stdout)
    assert shown["size"] == len(files["a.jsonl"])
    assert shown["compression"] == "zstd"
    assert len(shown["records"]) == 1
    assert run("show", sha256(b"")).stdout.decode().startswith(f"object       {sha256(b'')}\n")
    check_store(tmp_path / ".casstore")


def test_stdin_through_a_pipe(run, tmp_path, cas_exe, env):
    run("init")
    data = random_bytes(2_500_000, seed=4)
    producer = subprocess.Popen(["cat", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    consumer = subprocess.Popen(
        [cas_exe, "add", "-"], stdin=producer.stdout, stdout=subprocess.PIPE, cwd=tmp_path, env=env
    )
    producer.stdout.close()
    producer.stdin.write(data)
    producer.stdin.close()
    out, _ = consumer.communicate(timeout=60)
    producer.wait()
    assert consumer.returncode == 0
    assert out.decode() == f"{sha256(data)}  -\n"
    assert run("cat", sha256(data)).stdout == data


def test_errors_are_one_line_with_exit_codes(run, tmp_path):
    outside = run("ls", check=False)
    assert outside.returncode == 1
    assert outside.stdout == b""
    assert outside.stderr.decode().startswith("cas: error: not inside a casstore store")
    assert "cas init" in outside.stderr.decode()
    assert outside.stderr.count(b"\n") == 1
    run("init")
    missing = run("cat", "nosuch", check=False)
    assert (missing.returncode, missing.stderr) == (
        1,
        b"cas: error: no object or ref matches 'nosuch'\n",
    )
    usage = run("frobnicate", check=False)
    assert usage.returncode == 2
    assert usage.stderr.startswith(b"cas: error: ")
    assert usage.stderr.count(b"\n") == 1
    assert b"Traceback" not in usage.stderr + missing.stderr + outside.stderr


def test_help_and_version(run):
    assert run("--help").stdout.startswith(b"Usage: cas")
    assert run("--version").stdout.startswith(b"cas, version ")


def test_cat_into_a_closed_pipe_is_quiet(run, tmp_path, cas_exe, env):
    run("init")
    data = random_bytes(4 * 1024 * 1024, seed=5)
    (tmp_path / "big").write_bytes(data)
    run("add", "big")
    proc = subprocess.Popen(
        [cas_exe, "cat", sha256(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=env,
    )
    assert proc.stdout.read(10) == data[:10]
    proc.stdout.close()  # the reader goes away, like `cas cat … | head -c 10`
    stderr = proc.stderr.read()
    proc.wait(timeout=60)
    assert stderr == b""
    assert proc.returncode == 141


def test_a_file_name_that_is_not_utf8(run, tmp_path, cas_exe, env):
    """sha256sum prints the name's raw bytes; so does cas add."""
    import os
    import shutil

    run("init")
    name = b"caf\xe9 \\ x.txt"
    with open(os.path.join(os.fsencode(tmp_path), name), "wb") as f:
        f.write(b"latin-1 name\n")
    got = subprocess.run([cas_exe, "add", name], cwd=tmp_path, env=env, capture_output=True)
    assert got.returncode == 0, got.stderr
    if shutil.which("sha256sum"):
        want = subprocess.run(["sha256sum", name], cwd=tmp_path, capture_output=True, check=True)
        assert got.stdout == want.stdout
    assert got.stdout == b"\\" + sha256(b"latin-1 name\n").encode() + b"  caf\xe9 \\\\ x.txt\n"
    shown = json.loads(run("show", "--json", sha256(b"latin-1 name\n")).stdout)
    path = shown["records"][0]["record"]["path"]
    assert path.endswith("caf\\xe9 \\ x.txt")
