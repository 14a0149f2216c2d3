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


def test_show_and_log_print_stored_control_characters_as_escapes(run, tmp_path):
    run("init")
    (tmp_path / "p").write_bytes(b"parent")
    (tmp_path / "c").write_bytes(b"child")
    parent = run("add", "p").stdout.decode()[:64]
    child = run(
        "add", "--parent", parent, "--dataset", "one\ntwo\r\x1b[2Jthree", "--transform", "t\nx", "c"
    ).stdout.decode()[:64]
    shown = run("show", child).stdout.decode()
    assert "      dataset:           one\\ntwo\\r\\x1b[2Jthree\n" in shown
    assert "      transform:         t\\nx\n" in shown
    assert "\x1b" not in shown and "\r" not in shown
    logged = run("log", child).stdout.decode()
    assert logged.count("\n") == 2 and "t\\nx" in logged
    exact = json.loads(run("show", "--json", child).stdout)["records"][0]["record"]
    assert exact["dataset"] == "one\ntwo\r\x1b[2Jthree"


def test_add_refuses_bad_inputs_before_storing_anything(run, tmp_path):
    run("init")
    (tmp_path / "a").write_bytes(b"a")
    base = run("add", "a").stdout.decode()[:64]
    run("ref", "set", "tags/v/1", base)
    (tmp_path / "b").write_bytes(b"b")
    cases = [
        (["--ref", "tags/v", "b"], "cas: error: ref 'tags/v' clashes with refs below it\n"),
        (["b", ".casstore/config.toml"], "cas: error: .casstore/config.toml: is inside the store"),
        (["--parent", base, "--param", "k=1", "--param", "k=2", "b"], "'k' is given twice"),
        (["b", "a/x"], "cas: error: a/x: Not a directory\n"),
    ]
    for args, message in cases:
        proc = run("add", *args, check=False)
        assert proc.returncode != 0, args
        assert proc.stdout == b"", args
        assert message in proc.stderr.decode(), (args, proc.stderr)
        assert proc.stderr.decode().count("\n") == 1, args
    assert run("ls", "--full").stdout.decode().count("\n") == 1  # only a


def test_source_show_prints_control_characters_as_escapes(run):
    run("init")
    run("source", "add", "s1", "http://127.0.0.1:9/x.json", "--dataset", "evil\r\x1b[2Jds")
    shown = run("source", "show", "s1").stdout.decode()
    assert "dataset      evil\\r\\x1b[2Jds\n" in shown
    assert "\r" not in shown and "\x1b" not in shown
