"""scripts/fetch-data.sh: a source's parquet files from Hugging Face (--source
NAME), from a mirror or a local directory (--mirror, or --source URL_OR_DIR),
and the withdrawn LAION-Aesthetics 6+ family (--subset).

Nothing here talks to the internet: the hub and the mirrors are a local HTTP
server (FakeHub) playing Hugging Face's API as the script uses it: the tree
listing (paginated with a Link header), resolve URLs that redirect to where the
bytes are, byte ranges, gated datasets, and the X-Error-Code answers.
"""
import hashlib
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from datasette_laion import profiles

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "fetch-data.sh"
# This Python's bin first: the script runs `python3`.
BASE_PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
USAGE = ("usage: scripts/fetch-data.sh [--source NAME] [--mirror URL_OR_DIR] [--subset SUBSET] [--files N] "
         "[--embeddings] [DEST]\n")
WITHDRAWN = (
    "LAION withdrew LAION-5B and the datasets made from it, LAION-Aesthetics included, in December 2023; "
    "Re-LAION-5B (August 2024, https://laion.ai/blog/relaion-5b/) is its cleaned successor. "
    "Give --source a mirror URL or a local directory that holds the parquet files."
)
GOOD_TOKEN = "hf_granted"  # an account that was granted access to the gated datasets
OTHER_TOKEN = "hf_not_granted"  # a valid token of an account that was not


def run(*args, env=None, cwd=None, timeout=60):
    base = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT")}
    return subprocess.run(
        [str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd,
        env={**base, "PATH": BASE_PATH, **(env or {})}, timeout=timeout, check=False,
    )


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_parquet_files(directory, sizes=(30_000, 20_000, 10_000)):
    """Stand-ins for the parquet files (fetching never reads their content)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for i, size in enumerate(sizes):
        name = f"train-{i:05d}-of-{len(sizes):05d}-{i:04x}beef.parquet"
        data = os.urandom(size)
        (directory / name).write_bytes(data)
        files[name] = data
    return files


@dataclass
class Repo:
    files: dict  # path in the repo -> bytes
    gated: bool = False
    listed: dict = field(default_factory=dict)  # path -> what the listing says instead: {"size": n} or {"sha256": hex}


class FakeHub(http.server.ThreadingHTTPServer):
    """A local HTTP server: plain routes ({path: bytes}, as a mirror) and, for
    repos ({"owner/name": Repo}), Hugging Face's dataset API: the tree listing
    in pages of page_size entries, resolve URLs (redirected to /cdn/...),
    byte ranges, gated repos (GOOD_TOKEN has access, OTHER_TOKEN does not, any
    other token is invalid), and the hub's 401/403/404 answers with their
    X-Error-Code. Records each request as (path, Range, Authorization)."""

    def __init__(self, routes=None, repos=None, page_size=1000):
        self.routes = routes or {}
        self.repos = repos or {}
        self.page_size = page_size
        self.requests = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hub.requests.append((self.path, self.headers.get("Range"), self.headers.get("Authorization")))
                url = urllib.parse.urlsplit(self.path)
                if url.path in hub.routes:
                    return self.send_bytes(hub.routes[url.path])
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ") or None
                if token not in (None, GOOD_TOKEN, OTHER_TOKEN):
                    return self.refuse(401, None, "Invalid credentials in Authorization header")
                tree = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/tree/main(?:/(.+))?", url.path)
                resolve = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/main/(.+)", url.path)
                cdn = re.fullmatch(r"/cdn/([^/]+/[^/]+)/(.+)", url.path)
                match = tree or resolve or cdn
                repo = hub.repos.get(match.group(1)) if match else None
                if repo is None:
                    return self.refuse(401 if token is None else 404, "RepoNotFound", "Repository not found")
                if tree:
                    return self.listing(repo, tree.group(2) or "", urllib.parse.parse_qs(url.query))
                path = urllib.parse.unquote(match.group(2))
                if repo.gated and token is None:
                    return self.refuse(401, "GatedRepo", "Access to this dataset is restricted. You must be authenticated.")
                if repo.gated and token != GOOD_TOKEN:
                    return self.refuse(403, "GatedRepo", "Access to this dataset is restricted and you are not in the authorized list.")
                if path not in repo.files:
                    return self.refuse(404, "EntryNotFound", "Entry not found")
                if resolve:  # as the hub does: to where the bytes are
                    self.send_response(302)
                    self.send_header("Location", f"/cdn/{match.group(1)}/{urllib.parse.quote(path)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                return self.send_bytes(repo.files[path])

            def listing(self, repo, folder, query):
                under = {p: d for p, d in repo.files.items() if not folder or p.startswith(folder + "/")}
                if not under:
                    return self.refuse(404, "EntryNotFound", f"{folder} does not exist on main")
                assert query.get("recursive") == ["true"]
                dirs = {p.rsplit("/", 1)[0] for p in under if "/" in p} - {folder}
                entries = sorted(
                    [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in dirs]
                    + [{"type": "file", "oid": "1" * 40, "size": len(d), "path": p,
                        "lfs": {"oid": repo.listed.get(p, {}).get("sha256", sha256(d)),
                                "size": repo.listed.get(p, {}).get("size", len(d)), "pointerSize": 134}}
                       for p, d in under.items()],
                    key=lambda e: e["path"],
                )
                start = int(query.get("cursor", ["0"])[0])
                page = entries[start:start + hub.page_size]
                body = json.dumps(page).encode()
                self.send_response(200)
                if start + hub.page_size < len(entries):
                    self.send_header("Link", f'<{hub.url}{self.path.split("?")[0]}?recursive=true'
                                             f'&cursor={start + hub.page_size}>; rel="next"')
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def refuse(self, status, code, message):
                body = json.dumps({"error": message}).encode()
                self.send_response(status)
                if code:
                    self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def send_bytes(self, body):
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match:
                    start = int(match.group(1))
                    if start >= len(body):
                        return self.refuse(416, None, "Range Not Satisfiable")
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def paths(self, prefix):
        return [path for path, _, _ in self.requests if path.startswith(prefix)]


@pytest.fixture
def hub():
    servers = []

    def start(routes=None, repos=None, page_size=1000):
        server = FakeHub(routes, repos, page_size)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def shards(prefix, count, size=3000):
    return {f"{prefix}{i:03d}.parquet": os.urandom(size + i) for i in range(count)}


def pd12m_repo():
    metadata = shards("metadata/pd12m.", 5)
    embeddings = {f"embeddings/pd12m.{i:03d}.npy": os.urandom(500) for i in range(3)}
    return Repo({**metadata, **embeddings, "README.md": b"# PD12M\n", "tutorials/metadata.md": b"..."})


def names(files):
    return sorted(path.rsplit("/", 1)[-1] for path in files)


# -- --source NAME: Hugging Face ------------------------------------------

def test_a_profile_name_fetches_its_dataset_following_the_listing_pages(tmp_path, hub):
    repo = pd12m_repo()
    server = hub(repos={"Spawning/PD12M": repo}, page_size=2)
    result = run("--source", "pd12m", env={"HF_ENDPOINT": server.url}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    dest = tmp_path / "data" / "pd12m"
    metadata = {p: d for p, d in repo.files.items() if p.startswith("metadata/")}
    assert sorted(p.name for p in dest.iterdir()) == names(metadata)  # not the embeddings, README or tutorials
    for path, data in metadata.items():
        name = path.rsplit("/", 1)[1]
        assert (dest / name).read_bytes() == data
        assert f"  {name}: sha256 ok\n" in result.stderr
    listing = "/api/datasets/Spawning/PD12M/tree/main/metadata?recursive=true"
    assert server.paths("/api/") == [listing, f"{listing}&cursor=2", f"{listing}&cursor=4"]
    assert f"Listing Spawning/PD12M metadata/ on {server.url}\n" in result.stderr
    assert "5 file(s), 0.0 MB in all, into data/pd12m\n" in result.stderr
    assert result.stderr.endswith("Fetched 5 file(s) of Spawning/PD12M into data/pd12m. Next:\n"
                                  "  datasette laion build pd12m.db data/pd12m --profile pd12m\n")
    assert all(auth is None for _, _, auth in server.requests)  # no HF_TOKEN, none sent

    again = run("--source", "pd12m", env={"HF_ENDPOINT": server.url}, cwd=tmp_path)
    assert again.returncode == 0 and again.stderr.count(": already there\n") == 5
    assert server.paths("/datasets/") == [f"/datasets/Spawning/PD12M/resolve/main/{p}" for p in sorted(metadata)]


@pytest.mark.parametrize("name", [p.name for p in profiles.PROFILES.values()])
def test_every_profile_finds_its_files_where_it_says(name, tmp_path, hub):
    """Each profile's dataset, laid out as its hf_files glob says, with a stray
    parquet file elsewhere where the glob has a folder."""
    profile = profiles.PROFILES[name]
    folder = profile.hf_files.rpartition("/")[0]
    files = shards(f"{folder}/part-" if folder else "part-", 2)
    stray = {"other/stray.parquet": b"not this one"} if folder else {}
    server = hub(repos={profile.source: Repo({**files, **stray, "README.md": b"card"})})
    result = run("--source", name, "--files", "1", env={"HF_ENDPOINT": server.url}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    dest = tmp_path / "data" / name
    assert [p.name for p in dest.iterdir()] == names(files)[:1]
    assert "--files 1: 1 of the 2 file(s)\n" in result.stderr
    assert result.stderr.endswith(f"  datasette laion build {name}.db data/{name} --profile {name}\n")


@pytest.mark.parametrize("source, repo, dest, build", [
    ("aesthetics_v2_4.75", "laion/aesthetics_v2_4.75", "data/laion-aesthetics-v2",
     "laion-aesthetics-v2.db data/laion-aesthetics-v2 --profile laion-aesthetics-v2"),
    ("laion/aesthetics_v2_4.5", "laion/aesthetics_v2_4.5", "data/aesthetics_v2_4.5",  # another dataset of a profile's
     "laion-aesthetics-v2.db data/aesthetics_v2_4.5 --profile laion-aesthetics-v2"),
    ("pd12m", "Spawning/PD12M", "data/pd12m", "pd12m.db data/pd12m --profile pd12m"),
    ("PD12M", "Spawning/PD12M", "data/pd12m", "pd12m.db data/pd12m --profile pd12m"),
    ("someone/other-set", "someone/other-set", "data/other-set", "other-set.db data/other-set"),
])
def test_source_names_and_dataset_ids(source, repo, dest, build, tmp_path, hub):
    files = shards("metadata/x-", 1) if repo == "Spawning/PD12M" else shards("data/train-", 1)
    server = hub(repos={repo: Repo(files)})
    result = run("--source", source, env={"HF_ENDPOINT": server.url}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert server.paths("/api/")[0].startswith(f"/api/datasets/{repo}/tree/main")
    assert len(list((tmp_path / dest).iterdir())) == 1
    assert result.stderr.endswith(f"Fetched 1 file(s) of {repo} into {dest}. Next:\n  datasette laion build {build}\n")


def test_an_unknown_source_name_lists_the_profiles(tmp_path):
    result = run("--source", "pd13m", cwd=tmp_path)
    assert result.returncode == 2
    width = max(map(len, profiles.PROFILES))
    assert result.stderr == (
        "error: --source: 'pd13m' is not a profile, a Hugging Face dataset id (owner/name), an http(s) URL or a directory.\n"
        "The profiles (`datasette laion profiles` describes them) and their datasets:\n"
        + "".join(f"  {p.name:<{width}}  {p.source}\n" for p in profiles.PROFILES.values())
        + USAGE
    )
    assert not (tmp_path / "data").exists()


def test_a_size_unlike_the_listed_one_is_refused(tmp_path, hub):
    files = shards("metadata/pd12m.", 2)
    short, good = sorted(files)
    repo = Repo(files, listed={short: {"size": len(files[short]) + 10}})
    server = hub(repos={"Spawning/PD12M": repo})
    dest = tmp_path / "dest"
    result = run("--source", "pd12m", dest, env={"HF_ENDPOINT": server.url})
    assert result.returncode == 1
    name = short.rsplit("/", 1)[1]
    assert f"error: {name}: size is {len(files[short])} bytes, the listing says {len(files[short]) + 10}\n" in result.stderr
    assert result.stderr.endswith(
        "error: 1 of 2 file(s) not fetched; DEST holds only complete, checked files. Run this again.\n")
    assert [p.name for p in dest.iterdir()] == [good.rsplit("/", 1)[1]]  # no NAME, no NAME.part


def test_a_sha256_unlike_the_listed_one_is_refused(tmp_path, hub):
    files = shards("metadata/pd12m.", 2)
    bad, good = sorted(files)
    repo = Repo(files, listed={bad: {"sha256": "0" * 64}})
    server = hub(repos={"Spawning/PD12M": repo})
    dest = tmp_path / "dest"
    result = run("--source", "pd12m", dest, env={"HF_ENDPOINT": server.url})
    assert result.returncode == 1
    name = bad.rsplit("/", 1)[1]
    assert f"error: {name}: sha256 is {sha256(files[bad])}, expected {'0' * 64}\n" in result.stderr
    assert [p.name for p in dest.iterdir()] == [good.rsplit("/", 1)[1]]


def test_downloads_resume_from_their_part_file(tmp_path, hub):
    files = {"data/a.parquet": os.urandom(40_000), "data/b.parquet": os.urandom(5000),
             "data/c.parquet": os.urandom(3000)}
    server = hub(repos={"kakaobrain/coyo-700m": Repo(files)})
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a.parquet.part").write_bytes(files["data/a.parquet"][:25_000])  # a download that stopped half way
    (dest / "b.parquet.part").write_bytes(files["data/b.parquet"])  # one that ended before its check
    (dest / "c.parquet.part").write_bytes(os.urandom(4000))  # larger than the file: not a start of it
    result = run("--source", "coyo-700m", dest, env={"HF_ENDPOINT": server.url})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["a.parquet", "b.parquet", "c.parquet"]
    for path, data in files.items():
        assert (dest / path.rsplit("/", 1)[1]).read_bytes() == data
    assert ("/cdn/kakaobrain/coyo-700m/data/a.parquet", "bytes=25000-", None) in server.requests
    assert "b.parquet: downloaded by an earlier run\n" in result.stderr
    assert "/datasets/kakaobrain/coyo-700m/resolve/main/data/b.parquet" not in server.paths("/datasets/")
    assert "  c.parquet: c.parquet.part is larger than the listed file: starting again\n" in result.stderr
    assert ("/cdn/kakaobrain/coyo-700m/data/c.parquet", None, None) in server.requests


def test_files_takes_the_first_files_in_name_order(tmp_path, hub):
    files = shards("metadata/pd12m.", 5)
    server = hub(repos={"Spawning/PD12M": Repo(dict(reversed(files.items())))}, page_size=2)
    dest = tmp_path / "dest"
    result = run("--source", "pd12m", "--files", "2", dest, env={"HF_ENDPOINT": server.url})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dest.iterdir()) == names(files)[:2]
    assert "--files 2: 2 of the 5 file(s)\n" in result.stderr
    assert len(server.paths("/datasets/")) == 2
    assert result.stderr.endswith(f"Fetched 2 file(s) of Spawning/PD12M into {dest}. Next:\n"
                                  f"  datasette laion build pd12m.db {dest} --profile pd12m\n")


def test_embeddings_go_beside_the_metadata(tmp_path, hub):
    repo = pd12m_repo()
    server = hub(repos={"Spawning/PD12M": repo})
    dest = tmp_path / "dest"
    result = run("--source", "pd12m", "--embeddings", "--files", "2", dest, env={"HF_ENDPOINT": server.url})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["embeddings", "pd12m.000.parquet", "pd12m.001.parquet"]
    assert sorted(p.name for p in (dest / "embeddings").iterdir()) == ["pd12m.000.npy", "pd12m.001.npy"]
    assert (dest / "embeddings" / "pd12m.001.npy").read_bytes() == repo.files["embeddings/pd12m.001.npy"]
    assert "  embeddings/pd12m.000.npy: sha256 ok\n" in result.stderr
    assert server.paths("/api/") == ["/api/datasets/Spawning/PD12M/tree/main/metadata?recursive=true",
                                     "/api/datasets/Spawning/PD12M/tree/main/embeddings?recursive=true"]


def test_embeddings_in_the_same_folder_take_one_listing(tmp_path, hub):
    files = {**shards("", 2), "0000.npz": b"z" * 100, "0001.npz": b"y" * 100}
    server = hub(repos={"mlfoundations/datacomp_1b": Repo(files)})
    dest = tmp_path / "dest"
    result = run("--source", "datacomp-1b", "--embeddings", dest, env={"HF_ENDPOINT": server.url})
    assert result.returncode == 0, result.stderr
    assert server.paths("/api/") == ["/api/datasets/mlfoundations/datacomp_1b/tree/main?recursive=true"]
    assert sorted(p.name for p in (dest / "embeddings").iterdir()) == ["0000.npz", "0001.npz"]
    assert len(list(dest.glob("*.parquet"))) == 2


# -- gated datasets and the hub's refusals -----------------------------------

GATED = "laion/relaion2B-en-research-safe"


@pytest.fixture
def gated(hub):
    return hub(repos={GATED: Repo(shards("part-", 2), gated=True)})


def test_a_gated_dataset_without_hf_token(tmp_path, gated):
    dest = tmp_path / "dest"
    result = run("--source", "relaion2b-en-research-safe", dest, env={"HF_ENDPOINT": gated.url})
    assert result.returncode == 1
    url = f"{gated.url}/datasets/{GATED}/resolve/main/part-000.parquet"
    assert result.stderr.splitlines()[-1] == (
        f"error: {GATED} is gated, and no HF_TOKEN is set (HTTP 401 for {url}). Request access at "
        f"{gated.url}/datasets/{GATED} with your Hugging Face account, then set HF_TOKEN to a token of that account "
        f"({gated.url}/settings/tokens) and run this again."
    )
    assert len(gated.paths("/datasets/")) == 1  # stopped at the first file: so would every other be
    assert list(dest.iterdir()) == []


def test_a_gated_dataset_with_a_token_not_granted_access(tmp_path, gated):
    result = run("--source", "relaion2b-en-research-safe", tmp_path / "dest",
                 env={"HF_ENDPOINT": gated.url, "HF_TOKEN": OTHER_TOKEN})
    assert result.returncode == 1
    url = f"{gated.url}/datasets/{GATED}/resolve/main/part-000.parquet"
    assert result.stderr.splitlines()[-1] == (
        f"error: access to {GATED} was not granted to the account of HF_TOKEN (HTTP 403 for {url}). Request access at "
        f"{gated.url}/datasets/{GATED} with that account and run this again once it is granted (some datasets grant "
        f"it at once, others after a review), or set HF_TOKEN to a token of an account that has access "
        f"({gated.url}/settings/tokens)."
    )


def test_a_gated_dataset_with_an_invalid_token(tmp_path, gated):
    result = run("--source", "relaion2b-en-research-safe", tmp_path / "dest",
                 env={"HF_ENDPOINT": gated.url, "HF_TOKEN": "hf_typo"})
    assert result.returncode == 1
    url = f"{gated.url}/api/datasets/{GATED}/tree/main?recursive=true"
    assert result.stderr.splitlines()[-1] == (
        f"error: HF_TOKEN was not accepted by {gated.url} (HTTP 401 for {url}: Invalid credentials in Authorization "
        f"header). Set it to a valid token ({gated.url}/settings/tokens) of an account that has access to {GATED} "
        f"({gated.url}/datasets/{GATED})."
    )


def test_a_gated_dataset_with_a_granted_token(tmp_path, gated):
    dest = tmp_path / "dest"
    result = run("--source", "relaion2b-en-research-safe", dest, env={"HF_ENDPOINT": gated.url, "HF_TOKEN": GOOD_TOKEN})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["part-000.parquet", "part-001.parquet"]
    assert {auth for _, _, auth in gated.requests} == {f"Bearer {GOOD_TOKEN}"}


@pytest.mark.parametrize("token", [None, GOOD_TOKEN])
def test_no_such_dataset(token, tmp_path, hub):
    server = hub()
    env = {"HF_ENDPOINT": server.url, **({"HF_TOKEN": token} if token else {})}
    result = run("--source", "someone/nothing", tmp_path / "dest", env=env)
    assert result.returncode == 1
    url = f"{server.url}/api/datasets/someone/nothing/tree/main?recursive=true"
    if token:
        assert result.stderr.splitlines()[-1] == (
            f"error: no dataset someone/nothing on {server.url} (HTTP 404 for {url}). Check the name: "
            "`datasette laion profiles` lists the profiles' datasets."
        )
    else:  # the hub's answer to anonymous requests for a private dataset too
        assert result.stderr.splitlines()[-1] == (
            f"error: no dataset someone/nothing on {server.url}, or it is private (HTTP 401 for {url}; without "
            "HF_TOKEN the hub gives the same answer for both). Check the name (`datasette laion profiles` lists the "
            "profiles' datasets); for a private dataset, set HF_TOKEN."
        )
    assert not (tmp_path / "dest").exists()


def test_a_path_that_is_not_a_directory_says_so(tmp_path, hub):
    server = hub()
    (tmp_path / "data").mkdir()
    result = run("--source", "data/improved_aesthetics_6plus", env={"HF_ENDPOINT": server.url}, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("error: no dataset data/improved_aesthetics_6plus on ")
    assert result.stderr.splitlines()[-1].endswith(
        "set HF_TOKEN. (Nor is there a directory data/improved_aesthetics_6plus here.)")


def test_a_withdrawn_laion_dataset_says_so(tmp_path, hub):
    server = hub()
    result = run("--source", "laion-aesthetics-v2", tmp_path / "dest", env={"HF_ENDPOINT": server.url})
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].endswith(
        " LAION withdrew LAION-5B and the datasets made from it, LAION-Aesthetics included, in December 2023; "
        "Re-LAION-5B (https://laion.ai/blog/relaion-5b/) is its cleaned successor: --source relaion2b-en-research-safe "
        "(gated), or --mirror URL_OR_DIR for a copy of this one."
    )


def test_an_unreachable_hub_fails_fast(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    result = run("--source", "pd12m", tmp_path / "dest", env={"HF_ENDPOINT": url}, timeout=30)
    assert time.monotonic() - start < 10
    assert result.returncode == 1
    assert result.stderr.startswith(f"Listing Spawning/PD12M metadata/ on {url}\nerror: cannot reach {url} (curl: (7) ")
    assert result.stderr.endswith("Check the network (and HF_ENDPOINT).\n")


@pytest.mark.parametrize("args, message, code", [
    (["--source", "pd12m", "--subset", "6.5plus"],
     "error: --subset is for the LAION-Aesthetics 6+ family, fetched without --source NAME\n" + USAGE, 2),
    (["--source", "pd12m", "--files", "0"], "error: --files: '0' is not a whole number of files (1 or more)\n" + USAGE, 2),
    (["--source", "coyo-700m", "--embeddings"],
     "error: --embeddings: coyo-700m has no embedding files known here (a profile's hf_embeddings in "
     "datasette_laion/profiles.py: pd12m and datacomp-1b have them)\n", 1),
    (["--source", "pd12m", "--embeddings", "--mirror", "http://127.0.0.1:9"],
     "error: --embeddings: only from Hugging Face (not with --mirror)\n" + USAGE, 2),
    (["--mirror", "no/such/dir"], "error: --mirror: no/such/dir is neither a directory nor an http(s) URL\n", 1),
    (["--source", "http://127.0.0.1:9", "--mirror", "http://127.0.0.1:8"],
     "error: --source http://127.0.0.1:9 and --mirror http://127.0.0.1:8: give one place to fetch from\n" + USAGE, 2),
])
def test_usage_errors(args, message, code, tmp_path):
    result = run(*args, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (code, message)


def test_help_describes_the_options():
    result = run("--help")
    assert result.returncode == 0 and result.stdout.startswith(USAGE)
    for option in ("--source NAME", "--files N", "--embeddings", "--mirror URL_OR_DIR", "HF_TOKEN", "HF_ENDPOINT"):
        assert option in result.stdout


# -- mirrors and local directories (--mirror, or --source URL_OR_DIR) ------

def test_fetch_from_a_local_directory_checks_sha256_files(tmp_path):
    source = tmp_path / "mirror"
    files = make_parquet_files(source / "data")
    names_ = sorted(files)
    (source / "data" / f"{names_[0]}.sha256").write_text(f"{sha256(files[names_[0]])}  {names_[0]}\n")
    (source / "SHA256SUMS").write_text(f"{sha256(files[names_[1]])}  data/{names_[1]}\n")
    dest = tmp_path / "dest"
    result = run("--source", source, dest)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dest.iterdir()) == names_
    for name, data in files.items():
        assert (dest / name).read_bytes() == data
    assert f"  {names_[0]}: sha256 ok\n" in result.stderr
    assert f"  {names_[1]}: sha256 ok\n" in result.stderr
    assert f"  {names_[2]}: no checksum published for it: not verified\n" in result.stderr
    assert "warning: the 6+ set was published as 7 files; this source has 3\n" in result.stderr
    assert result.stderr.endswith(f"Fetched 3 file(s) of improved_aesthetics_6plus into {dest}. Next:\n"
                                  f"  datasette laion build laion-aesthetic-6pls.db {dest}\n")
    again = run("--source", source, dest)
    assert again.returncode == 0 and again.stderr.count(": already there\n") == 3


def test_a_directory_named_as_a_bare_word_is_still_a_directory(tmp_path):
    files = make_parquet_files(tmp_path / "mirror", sizes=(100, 200))
    result = run("--source", "mirror", "--files", "1", "dest", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "dest").iterdir()] == sorted(files)[:1]


def test_a_profile_with_a_local_directory(tmp_path):
    """--source NAME --mirror DIR: the profile's files from a copy at hand."""
    files = make_parquet_files(tmp_path / "copy", sizes=(100, 200))
    (tmp_path / "pd12m").mkdir()  # a directory named as the profile: the profile is meant
    result = run("--source", "pd12m", "--mirror", "copy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "data" / "pd12m").iterdir()) == sorted(files)
    assert result.stderr.startswith("note: 'pd12m' is the profile here, not the directory of that name "
                                    "(--mirror ./pd12m copies from it)\n")
    assert result.stderr.endswith("  datasette laion build pd12m.db data/pd12m --profile pd12m\n")


def test_fetch_refuses_a_file_with_the_wrong_sha256(tmp_path):
    source = tmp_path / "mirror"
    files = make_parquet_files(source, sizes=(1000, 2000))
    bad, good = sorted(files)
    (source / f"{bad}.sha256").write_text("0" * 64 + "\n")
    dest = tmp_path / "dest"
    result = run("--source", source, dest)
    assert result.returncode == 1
    assert f"error: {bad}: sha256 is {sha256(files[bad])}, expected {'0' * 64}\n" in result.stderr
    assert result.stderr.endswith("error: 1 of 2 file(s) not fetched; DEST holds only complete, checked files. Run this again.\n")
    assert sorted(p.name for p in dest.iterdir()) == [good]


def test_fetch_from_an_unreachable_source_fails_fast_and_says_why(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    result = run("--source", url, tmp_path / "dest", timeout=30)
    assert time.monotonic() - start < 10
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot reach {url} (curl: (7) ")
    assert result.stderr.endswith(f"Check the network, or: {WITHDRAWN}\n")
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("option", ["--source", "--mirror"])
def test_fetch_from_a_mirror_with_sha256sums(option, tmp_path, hub):
    files = make_parquet_files(tmp_path / "files", sizes=(5000, 7000))
    sums = "".join(f"{sha256(d)}  data/{n}\n" for n, d in sorted(files.items()))
    server = hub(routes={"/SHA256SUMS": sums.encode(), **{f"/data/{n}": d for n, d in files.items()}})
    dest = tmp_path / "dest"
    result = run(option, server.url, dest, env={"HF_TOKEN": GOOD_TOKEN})
    assert result.returncode == 0, result.stderr
    for name, data in files.items():
        assert (dest / name).read_bytes() == data
        assert f"  {name}: sha256 ok\n" in result.stderr
    assert all(auth is None for _, _, auth in server.requests)  # HF_TOKEN goes to the hub only


def aesthetics_repo(files, subset="6plus"):
    return {f"ChristophSchuhmann/improved_aesthetics_{subset}": Repo(
        {f"data/{name}": data for name, data in files.items()})}


def test_fetch_from_a_hugging_face_endpoint_resumes_and_checks_lfs_sha256(tmp_path, hub):
    files = make_parquet_files(tmp_path / "files", sizes=(40_000, 3000))
    server = hub(repos=aesthetics_repo(files, "6.5plus"))
    dest = tmp_path / "dest"
    dest.mkdir()
    first = min(files)
    (dest / f"{first}.part").write_bytes(files[first][:25_000])  # a download that stopped half way
    result = run("--subset", "6.5plus", "--source", server.url, dest)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dest.iterdir()) == sorted(files)
    for name, data in files.items():
        assert (dest / name).read_bytes() == data
        assert f"  {name}: sha256 ok\n" in result.stderr
    assert (f"/cdn/ChristophSchuhmann/improved_aesthetics_6.5plus/data/{first}", "bytes=25000-", None) in server.requests


def test_the_6plus_set_from_hf_endpoint(tmp_path, hub):
    """No --source: the 6+ set from HF_ENDPOINT (https://huggingface.co when unset)."""
    files = make_parquet_files(tmp_path / "files", sizes=(100, 200))
    server = hub(repos=aesthetics_repo(files))
    result = run(env={"HF_ENDPOINT": server.url}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "data" / "improved_aesthetics_6plus").iterdir()) == sorted(files)
    assert server.paths("/api/") == ["/api/datasets/ChristophSchuhmann/improved_aesthetics_6plus/tree/main/data?recursive=true"]


def test_fetch_says_when_the_files_are_withdrawn(tmp_path, hub):
    server = hub()
    result = run("--source", server.url, tmp_path / "dest")
    assert result.returncode == 1
    api = f"{server.url}/api/datasets/ChristophSchuhmann/improved_aesthetics_6plus/tree/main/data?recursive=true"
    assert result.stderr.splitlines()[-1] == (
        f"error: ChristophSchuhmann/improved_aesthetics_6plus is not available from {server.url} (HTTP 401 for {api}). "
        + WITHDRAWN
    )
