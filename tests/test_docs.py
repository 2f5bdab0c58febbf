"""README.md and docs/ name only what exists, and README's two commands are the ones CI runs.

Checked without running anything heavy (no jax import, no training): every repository path
(and `tests/x.py::test_name`), every `python -m fer_jax.X` module, every flag given to a fer_jax
command or script (read from the `flags.DEFINE_*` / `add_argument` calls of its source), every
config argument (`configs/x.py:ARG` builds) and config field (`config.a.b`, `--config.a.b`,
`eac.lam`), every augmentation op of a pipeline string, and every relative link and its anchor.
"""

import ast
import functools
import importlib.util
import pathlib
import re
import shlex
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Fenced blocks whose text is output or a listing, not commands or names to check.
PLAIN_FENCES = ("text", "console", "python")
# Dotted names in backticks that are config fields without the `config.` prefix.
CONFIG_BLOCKS = ("model", "optimizer", "dataset", "noise", "input", "eac", "ncct", "scn",
                 "lanet", "rul", "nla", "resup", "ce")
FILE_SUFFIXES = ("json", "jsonl", "npz", "npy", "png", "csv", "md", "txt", "py", "sh", "tensor",
                 "pkl", "pth", "tar", "lock", "toml", "jaxexport", "onnx")
# Flags absl defines for every command.
ABSL_FLAGS = {"help", "helpfull", "helpshort", "helpxml", "flagfile", "undefok", "logtostderr",
              "alsologtostderr", "log_dir", "verbosity", "v", "stderrthreshold"}
PATH_RE = re.compile(r"(?<![\w./~$<>-])((?:configs|fer_jax|scripts|docs|tests|\.ci)/[\w./-]*)")
ROOT_FILE_RE = re.compile(r"(?<![\w./-])(README\.md|pyproject\.toml|requirements\.lock)(?![\w.])")
TEST_ID_RE = re.compile(r"(tests/[\w/]+\.py)::(\w+)")
MODULE_RE = re.compile(r"python -m (fer_jax(?:\.\w+)+)")
CONFIG_FIELD_RE = re.compile(r"(?<![\w./])(?:--)?config\.([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)")
CONFIG_ARG_RE = re.compile(r"(?<![\w/])(configs/[\w/]+\.py):([^\s`'\"\]\)|]+)")
LINK_RE = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")


@functools.cache
def _parts(path):
  """(fenced blocks as [(info, text)], the text outside them) of a Markdown file."""
  blocks, outside, current, info = [], [], None, ""
  for line in path.read_text().splitlines():
    if line.startswith("```"):
      if current is None:
        current, info = [], line[3:].strip()
      else:
        blocks.append((info, "\n".join(current)))
        current = None
      continue
    (outside if current is None else current).append(line)
  assert current is None, f"{path.name}: unclosed code fence"
  return blocks, "\n".join(outside)


def _inline_spans(path):
  return re.findall(r"`([^`\n]+)`", _parts(path)[1])


def _checked_text(path):
  """Everything that names things: prose, inline code and the command blocks."""
  blocks, outside = _parts(path)
  return "\n".join([outside, *(text for info, text in blocks if info not in PLAIN_FENCES)])


def _shell_blocks(path):
  return [text for info, text in _parts(path)[0] if info in ("bash", "sh", "shell", "")]


def _doc_ids():
  return [p.relative_to(ROOT).as_posix() for p in DOCS]


# --- sources of truth --------------------------------------------------------------------------


def _module_file(name):
  """The source file of module `fer_jax.a.b`, or None."""
  base = ROOT.joinpath(*name.split("."))
  for candidate in (base.with_suffix(".py"), base / "__init__.py"):
    if candidate.is_file():
      return candidate
  return None


def _resolves(name):
  """Whether `fer_jax.a.b` is a module, or a module and a name it defines at top level."""
  if _module_file(name):
    return True
  module, _, attribute = name.rpartition(".")
  source = _module_file(module)
  if source is None:
    return False
  tree = ast.parse(source.read_text())
  defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
  defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
              if isinstance(t, ast.Name)}
  # A package's __init__ that re-exports names from its modules (fer_jax.inference).
  defined |= {alias.asname or alias.name for n in tree.body if isinstance(n, ast.ImportFrom)
              for alias in n.names}
  return attribute in defined


@functools.cache
def _defined_flags(source):
  """Flag names a command's source defines (absl DEFINE_* or argparse add_argument), with those
  of the fer_jax modules it imports (e.g. `python -m fer_jax.faces` defines its own)."""
  text = source.read_text()
  names = set(re.findall(r"DEFINE_\w+\(\s*[\"'](\w+)[\"']", text))
  for group in re.findall(r"^\s*from fer_jax import ([\w, ]+)$", text, re.M):
    for module in group.replace(" ", "").split(","):
      imported = _module_file(f"fer_jax.{module}")
      if imported is not None and imported != source:
        names |= set(re.findall(r"DEFINE_\w+\(\s*[\"'](\w+)[\"']", imported.read_text()))
  names |= set(re.findall(r"add_argument\(\s*[\"']--(\w+)[\"']", text))
  if source.suffix == ".sh":  # a shell script: the flags its usage line and code name
    names |= set(re.findall(r"--(\w+)", text))
  return names


@functools.cache
def _bool_flags(source):
  return set(re.findall(r"DEFINE_bool(?:ean)?\(\s*[\"'](\w+)[\"']", source.read_text()))


def _all_command_sources():
  sources = [p for p in ROOT.joinpath("fer_jax").rglob("*.py") if "DEFINE_" in p.read_text()
             or "add_argument" in p.read_text()]
  return sources + sorted(ROOT.joinpath("scripts").glob("*"))


@functools.cache
def _load_config_module(path):
  spec = importlib.util.spec_from_file_location(f"_docs_{pathlib.Path(path).stem}", ROOT / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _build(path, arg=None):
  """`get_config(arg)` of a config file (relative path); raises what the config raises."""
  return _load_config_module(path).get_config(arg)


def _field_paths(config, prefix=""):
  paths = set()
  for key in config.keys():
    path = f"{prefix}{key}"
    paths.add(path)
    value = config[key]
    if hasattr(value, "keys"):
      paths |= _field_paths(value, path + ".")
  return paths


@functools.cache
def _all_config_fields():
  """Every field path of every run config, over every dataset it takes."""
  fields = set()
  for path in sorted(ROOT.joinpath("configs").glob("*.py")):
    if path.stem in ("__init__", "common"):
      continue
    for data in (None, "synthetic", "raf_db", "ferplus", "affectnet", "folder"):
      try:
        fields |= _field_paths(_build(f"configs/{path.name}", data))
      except ValueError:  # this config does not take that dataset (LA-Net and FERPlus)
        continue
  return fields


@functools.cache
def _device_ops():
  tree = ast.parse((ROOT / "fer_jax/data/device_ops.py").read_text())
  return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
          and any(getattr(d, "id", None) == "register" for d in node.decorator_list)}


def _is_placeholder(text):
  return any(c in text for c in "<>[]*") or "..." in text or re.search(r"\b[A-Z]{2,}\b", text)


# --- commands in code blocks -------------------------------------------------------------------


def _commands(text):
  """[(source file, [tokens after it])] of every fer_jax command and script in shell `text`."""
  text = text.replace("\\\n", " ")
  found = []
  for line in text.splitlines():
    try:
      tokens = shlex.split(line, comments=True)
    except ValueError:
      continue
    tokens = [t.strip("[]") for t in tokens]
    command = []
    for token in [*tokens, "&&"]:
      if token in ("&&", "||", ";", "|"):
        found += _command(command)
        command = []
      else:
        command.append(token)
  return found


@functools.cache
def _console_commands():
  """`fer-jax` subcommand -> module, from fer_jax/cli.py's COMMANDS."""
  text = (ROOT / "fer_jax/cli.py").read_text()
  return dict(re.findall(r'^\s*"([\w-]+)": \("(\w+)"', text, re.M))


def _command(tokens):
  """[(source, arguments)] of the fer_jax command or script in `tokens`; [] for none (or for a
  placeholder such as `fer-jax <command>`)."""
  tokens = [t for t in tokens if t]
  for i, token in enumerate(tokens):
    if i + 1 < len(tokens) and _is_placeholder(tokens[i + 1]):
      continue
    if token == "fer-jax" and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
      module = _console_commands().get(tokens[i + 1])
      assert module, f"fer-jax {tokens[i + 1]}: no such command in fer_jax/cli.py COMMANDS"
      return [(_module_file(f"fer_jax.{module}"), tokens[i + 2 :])]
    if token == "-m" and i + 1 < len(tokens) and tokens[i + 1].startswith("fer_jax"):
      source = _module_file(tokens[i + 1])
      assert source is not None, f"python -m {tokens[i + 1]}: no such module"
      return [(source, tokens[i + 2 :])]
    if token.startswith("scripts/") and token.endswith((".py", ".sh")):
      return [(ROOT / token, tokens[i + 1 :])]
  return []


def _flag_name(token):
  return token[2:].partition("=")[0]


def _flag_value(tokens, name):
  for i, token in enumerate(tokens):
    if token == f"--{name}" and i + 1 < len(tokens):
      return tokens[i + 1]
    if token.startswith(f"--{name}="):
      return token.partition("=")[2]
  return None


# --- tests -------------------------------------------------------------------------------------


def test_readme_two_commands_are_the_ones_ci_runs():
  ci = (ROOT / ".ci/run").read_text().splitlines()
  commands = [line.strip() for line in ci if line.strip().startswith("pip install")]
  assert len(commands) == 2, f".ci/run: expected two `pip install ...` command lines: {commands}"
  readme = (ROOT / "README.md").read_text()
  section = readme.split("## The two commands", 1)
  assert len(section) == 2, "README.md has no '## The two commands' section"
  block = re.search(r"```bash\n(.*?)```", section[1], re.S)
  assert block, "README.md: no bash block under '## The two commands'"
  lines = [ln.strip() for ln in block.group(1).splitlines()
           if ln.strip() and not ln.strip().startswith("#")]
  assert lines == commands, f"README's two commands {lines} differ from .ci/run's {commands}"


@pytest.mark.parametrize("doc", _doc_ids())
def test_named_repository_paths_exist(doc):
  text = _checked_text(ROOT / doc)
  missing = sorted({p.rstrip(".") for p in PATH_RE.findall(text)
                    if not (ROOT / p.rstrip(".")).exists()})
  missing += sorted({f for f in ROOT_FILE_RE.findall(text) if not (ROOT / f).exists()})
  for path, name in TEST_ID_RE.findall(text):
    source = ROOT / path
    if not source.is_file() or not re.search(rf"^\s*def {name}\(", source.read_text(), re.M):
      missing.append(f"{path}::{name}")
  assert not missing, f"{doc} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", _doc_ids())
def test_named_modules_exist(doc):
  text = _checked_text(ROOT / doc)
  names = set(MODULE_RE.findall(text))
  names |= {s for s in _inline_spans(ROOT / doc) if re.fullmatch(r"fer_jax(\.\w+)+", s)}
  missing = sorted(n for n in names if not _resolves(n))
  assert not missing, f"{doc} names modules that do not exist: {missing}"


@pytest.mark.parametrize("doc", _doc_ids())
def test_flags_given_to_commands_are_defined(doc):
  wrong = []
  commands = [c for block in _shell_blocks(ROOT / doc) for c in _commands(block)]
  every = set().union(*(_defined_flags(s) for s in _all_command_sources())) | ABSL_FLAGS
  for span in _inline_spans(ROOT / doc):
    if found := _commands(span):  # an inline command line
      commands += found
    elif span.startswith("--"):  # flags named without their command: some command defines them
      for name in re.findall(r"(?<![\w-])--([a-z_]\w*)", span):
        if name != "config" and name not in every:
          wrong.append(f"(inline) --{name}")
  for source, tokens in commands:
    defined = _defined_flags(source) | ABSL_FLAGS
    for token in tokens:
      if not token.startswith("--") or token.startswith("--config."):
        continue
      name = _flag_name(token)
      negated = name.startswith("no") and name[2:] in _bool_flags(source)
      if name not in defined and not negated:
        wrong.append(f"{source.relative_to(ROOT)} --{name}")
  assert not wrong, f"{doc} gives flags that no command defines: {sorted(set(wrong))}"


@pytest.mark.parametrize("doc", _doc_ids())
def test_config_arguments_build_and_overrides_exist(doc):
  wrong = []
  text = _checked_text(ROOT / doc)
  for path, arg in set(CONFIG_ARG_RE.findall(text)):
    if _is_placeholder(path + arg):
      continue
    try:
      _build(path, arg.rstrip(".,;"))
    except Exception as e:  # noqa: BLE001 (any failure of the documented argument is the finding)
      wrong.append(f"{path}:{arg}: {type(e).__name__}: {e}")
  for block in _shell_blocks(ROOT / doc):
    for _, tokens in _commands(block):
      given = _flag_value(tokens, "config")
      if not given or _is_placeholder(given):
        continue
      path, _, arg = given.partition(":")
      config = _build(path, arg or None)
      fields = _field_paths(config)
      for token in tokens:
        if token.startswith("--config."):
          field = _flag_name(token)[len("config."):]
          if field not in fields and not _is_placeholder(field):
            wrong.append(f"{given}: no field {field}")
  assert not wrong, f"{doc}: {wrong}"


@pytest.mark.parametrize("doc", _doc_ids())
def test_named_config_fields_exist(doc):
  fields = _all_config_fields()
  named = {f for f in CONFIG_FIELD_RE.findall(_checked_text(ROOT / doc)) if f != "json"}
  for span in _inline_spans(ROOT / doc):
    head = span.partition("=")[0]
    if re.fullmatch(rf"(?:{'|'.join(CONFIG_BLOCKS)})(\.[a-z_][a-z0-9_]*)+", head) \
        and head.rpartition(".")[2] not in FILE_SUFFIXES:
      named.add(head)
  missing = sorted(f for f in named if f not in fields)
  assert not missing, f"{doc} names config fields that no config has: {missing}"


@pytest.mark.parametrize("doc", _doc_ids())
def test_pipeline_ops_exist(doc):
  ops = _device_ops()
  pipelines = [s for s in _inline_spans(ROOT / doc)
               if "|" in s and re.fullmatch(r"(\w+(\(.*?\))?\|?)+", s.replace(" ", ""))]
  pipelines += re.findall(r"train_ops='([^']+)'", _checked_text(ROOT / doc))
  unknown = sorted({m.group(1) for p in pipelines for part in p.split("|")
                    if (m := re.match(r"\s*(\w+)", part)) and m.group(1) not in ops})
  # A single op with keyword arguments, e.g. `flip_lr(p=0.5, swap_landmarks=True)`.
  unknown += sorted({m.group(1) for s in _inline_spans(ROOT / doc)
                     if (m := re.fullmatch(r"([a-z_]+)\((.*=.*)\)", s)) and m.group(1) not in ops})
  assert not unknown, f"{doc} names augmentation ops that do not exist: {unknown}"


def _slug(heading):
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@functools.cache
def _anchors(path):
  seen, anchors = {}, set()
  for line in _parts(path)[1].splitlines():
    if m := re.match(r"#{1,6} (.+)", line):
      slug = _slug(m.group(1))
      anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
      seen[slug] = seen.get(slug, 0) + 1
  return anchors


@pytest.mark.parametrize("doc", _doc_ids())
def test_relative_links_resolve(doc):
  source = ROOT / doc
  broken = []
  for _, target in LINK_RE.findall(_parts(source)[1]):
    if re.match(r"[a-z]+:", target):
      continue
    path, _, anchor = target.partition("#")
    resolved = (source.parent / path).resolve() if path else source
    if not resolved.exists():
      broken.append(target)
    elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
      broken.append(target)
  assert not broken, f"{doc} has links that do not resolve: {broken}"


@pytest.mark.parametrize("doc", _doc_ids())
def test_no_development_diary(doc):
  text = (ROOT / doc).read_text()
  diary = re.findall(r"\b(?:session|round) \d+\b|runs/s\d+/", text, re.I)
  assert not diary, f"{doc} dates things by rounds of work or one machine's run folders: {diary}"
