"""`build_site`: a bundle as a static web site that classifies in the browser, offline once built.

The site holds the page (`site/` next to this module), a copy of the bundle's
files, and the JavaScript packages it runs on: LiteRT.js (`@litertjs/core`,
its WASM builds) and tokenizers.js (`@huggingface/tokenizers`). Their versions
are pinned in `package.json` and `package-lock.json` next to this module (the
lock holds every package's integrity hash); the first time, `npm ci` installs
exactly those into a cache folder (`$MMKERAS_NPM_CACHE`, default
`~/.cache/mmkeras/npm`), from npm's own cache when it has them
(`--prefer-offline`), and the site copies them from there: the page loads
nothing from any other host. Only the two WASM builds LiteRT.js
picks without threads are copied (with and without relaxed SIMD); the threaded
one needs cross-origin isolation headers a plain static host does not send.

Example:
>>> report = build_site("bundles/demo", "sites/demo")  # doctest: +SKIP
>>> report["size_bytes"] > 0  # doctest: +SKIP
True
"""

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

from mmkeras.errors import UserError
from mmkeras.folder_lock import folder_lock
from mmkeras.runtime.bundle import BUNDLE_FILE, TEST_VECTORS_FILE, TEST_VECTORS_FOLDER, read_bundle
from mmkeras.staged_folder import staged_folder

logger = logging.getLogger("mmkeras")

# The npm project of the page's packages: the versions it was written and tested against
# (docs/design.md, "Browser runtime"), and the lock `npm ci` installs exactly.
NPM_PROJECT_FILES = ("package.json", "package-lock.json")
NPM_PACKAGES = json.loads(Path(__file__).with_name("package.json").read_text(encoding="utf-8"))["dependencies"]
# Where each file the page needs comes from (under node_modules/) and goes (under the site).
VENDOR_FILES = {
    "@litertjs/core/dist/index.js": "vendor/litertjs-core/index.js",
    # The package's `main` (dist/index.js) is missing in some releases; dist/bundle.js always ships.
    "@litertjs/wasm-utils/dist/bundle.js": "vendor/litertjs-wasm-utils/index.js",
    "@huggingface/tokenizers/dist/tokenizers.min.mjs": "vendor/tokenizers/tokenizers.min.mjs",
    "@litertjs/core/wasm/litert_wasm_internal.js": "wasm/litert_wasm_internal.js",
    "@litertjs/core/wasm/litert_wasm_internal.wasm": "wasm/litert_wasm_internal.wasm",
    "@litertjs/core/wasm/litert_wasm_compat_internal.js": "wasm/litert_wasm_compat_internal.js",
    "@litertjs/core/wasm/litert_wasm_compat_internal.wasm": "wasm/litert_wasm_compat_internal.wasm",
}
PAGE_FOLDER = Path(__file__).with_name("site")
SITE_BUNDLE_FOLDER = "bundle"
NPM_CACHE_ENV = "MMKERAS_NPM_CACHE"


def npm_cache_folder() -> Path:
    """Where the npm packages are installed, one folder per set of pinned versions."""
    root = Path(os.environ.get(NPM_CACHE_ENV) or Path.home() / ".cache" / "mmkeras" / "npm")
    pins = "_".join(f"{name.replace('/', '+')}@{version}" for name, version in sorted(NPM_PACKAGES.items()))
    return root / pins


def install_packages(cache: Path) -> Path:
    """`node_modules` holding every file of `VENDOR_FILES`; npm runs only when one is missing.

    Under the cache's lock, waited for: `npm ci` first deletes `node_modules`, so a second `mmkeras web` that
    found a file missing while the first was installing would pull the packages from under its copy.
    """
    modules = cache / "node_modules"
    if not _missing_files(modules):
        return modules
    with folder_lock(cache, wait=True):
        if not _missing_files(modules):  # installed by another process while this one waited
            return modules
        return _npm_install(cache, modules)


def _missing_files(modules: Path) -> list[str]:
    return [source for source in VENDOR_FILES if not (modules / source).is_file()]


def _npm_install(cache: Path, modules: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise UserError("building the web site needs npm (Node.js), which is not on PATH: e.g. apt-get install -y npm")
    cache.mkdir(parents=True, exist_ok=True)
    for name in NPM_PROJECT_FILES:
        shutil.copyfile(Path(__file__).with_name(name), cache / name)
    logger.info("installing %s with npm into %s", ", ".join(NPM_PACKAGES), cache)
    completed = subprocess.run(
        [npm, "ci", "--prefix", str(cache), "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts",
         "--loglevel=error"],
        capture_output=True,
        text=True,
    )
    missing = _missing_files(modules)
    if completed.returncode != 0 or missing:
        reason = (completed.stderr.strip().splitlines() or [f"files missing: {', '.join(missing)}"])[-1]
        raise UserError(f"npm could not install the site's packages: {reason}")
    return modules


def copy_bundle(bundle_dir: Path, bundle: dict, destination: Path):
    """The files a device needs (and the test vectors), not whatever else sits in the folder."""
    destination.mkdir(parents=True)
    for name in (BUNDLE_FILE, bundle["model_file"], bundle["preprocessor_file"], bundle["tokenizer_file"]):
        shutil.copy2(bundle_dir / name, destination / name)
    if (bundle_dir / TEST_VECTORS_FILE).is_file():
        shutil.copy2(bundle_dir / TEST_VECTORS_FILE, destination / TEST_VECTORS_FILE)
        shutil.copytree(bundle_dir / TEST_VECTORS_FOLDER, destination / TEST_VECTORS_FOLDER)


def check_site_replaceable(out_dir: Path):
    """Only a site written before, or an empty folder, may be replaced."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise UserError("the output path exists and is not a folder", path=out_dir)
    is_site = (out_dir / "index.html").is_file() and (out_dir / SITE_BUNDLE_FOLDER / BUNDLE_FILE).is_file()
    if any(out_dir.iterdir()) and not is_site:
        raise UserError("the output folder is not empty and is not an mmkeras site; not replacing it", path=out_dir)


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def build_site(bundle_dir: str | Path, out_dir: str | Path) -> dict:
    """Write a static site that runs `bundle_dir` in the browser.

    Serve it from any static host (`python3 -m http.server -d SITE`) and open
    `index.html`; `index.html?text=...&image=URL` classifies that example at
    once and writes the result as JSON into the element with id `result`.

    Args:
        bundle_dir: a bundle folder written by `mmkeras export`.
        out_dir: the site folder to write (or a site to replace).

    Returns:
        `path`, `size_bytes` (the whole site), `files` and `packages` (npm name -> version).

    Raises:
        UserError: not a bundle, npm missing or failing, or `out_dir` holds something else.

    Example:
    >>> build_site("bundles/demo", "sites/demo")["packages"]["@litertjs/core"]  # doctest: +SKIP
    '2.5.3'
    """
    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    bundle = read_bundle(bundle_dir)
    check_site_replaceable(out_dir)
    modules = install_packages(npm_cache_folder())
    with staged_folder(out_dir) as staging:
        shutil.copytree(PAGE_FOLDER, staging, dirs_exist_ok=True)
        for source, target in VENDOR_FILES.items():
            (staging / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(modules / source, staging / target)
        copy_bundle(bundle_dir, bundle, staging / SITE_BUNDLE_FOLDER)
    report = {
        "path": str(out_dir),
        "size_bytes": folder_size(out_dir),
        "files": sum(1 for path in out_dir.rglob("*") if path.is_file()),
        "packages": dict(NPM_PACKAGES),
    }
    return report
