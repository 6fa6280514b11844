#!/usr/bin/env python3
"""Generate src/api/protobuf/schema.rs: the Kubernetes protobuf schema the API server needs to
turn `application/vnd.kubernetes.protobuf` request bodies into JSON.

Where the facts come from (read from the cargo registry, ~/.cargo/registry/src/*/; `cargo fetch`
in k3rs brings k8s-openapi, and k8s-pb, which k3rs does not depend on, comes with `cargo fetch`
in a scratch crate that depends on `k8s-pb = "=0.9.0"`):

* k8s-pb 0.9.0 (prost code generated from upstream's generated.proto files): message names,
  field numbers, proto types and cardinality. prost renames fields to snake_case and some
  messages to Rust case (`Json`, `JsonSchemaProps`), so the original proto/JSON names are lost.
* k8s-openapi 0.29 (generated from upstream's OpenAPI spec): exact JSON names per type
  (`"volumeID" => Field::Key_volume_id`), exact definition names, and (apiVersion, kind) of
  every top-level type.

The two are joined per message on (package, lower-cased name) and per field on the name with
underscores and punctuation removed and lower-cased (`volume_id` ~ `volumeID`, `cluster_i_ps` ~
`clusterIPs`, `x_kubernetes_list_type` ~ `x-kubernetes-list-type`). A proto field that has no
JSON counterpart but whose message's fields all do is a Go struct embedded with
`json:",inline"` (Probe.handler, Volume.volumeSource, ConfigMapKeySelector.localObjectReference,
...): it is marked Inline and the decoder merges its fields into the parent object.

Usage: scripts/gen-protobuf-schema.py [--registry DIR] [--out FILE]
The script prints every field whose JSON name had to be guessed; the table is only written if
there are none (or --allow-guesses is given).
"""

import argparse
import glob
import os
import re
import sys

PB_VERSION = "0.9.0"
OPENAPI_VERSION = "0.29.0"
# The Kubernetes minor version k3rs pins in Cargo.toml (k8s-openapi feature); its JSON names
# and kinds win, the crate's other version folders fill in fields of newer protos.
OPENAPI_PRIMARY = "v1_35"

# Packages (k8s-pb module paths) whose every message goes into the table; messages they
# reference from other packages are added too.
PACKAGES = [
    "api/core/v1",
    "api/apps/v1",
    "api/batch/v1",
    "api/autoscaling/v1",
    "api/autoscaling/v2",
    "api/coordination/v1",
    "api/discovery/v1",
    "api/events/v1",
    "api/networking/v1",
    "api/policy/v1",
    "api/rbac/v1",
    "api/storage/v1",
    "api/scheduling/v1",
    "api/node/v1",
    "api/authentication/v1",
    "api/authorization/v1",
    "api/certificates/v1",
    "apimachinery/pkg/apis/meta/v1",
    "apimachinery/pkg/runtime",
    "apimachinery/pkg/util/intstr",
    "apimachinery/pkg/api/resource",
    "apiextensions_apiserver/pkg/apis/apiextensions/v1",
]

# Messages whose JSON form is not an object of their fields (custom MarshalJSON upstream).
SPECIAL = {
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "Quantity",
    "k8s.io.apimachinery.pkg.api.resource.QuantityValue": "Quantity",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time": "Time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Timestamp": "Time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": "MicroTime",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration": "Duration",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1": "RawJson",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "RawJson",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON": "RawJson",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray": "SchemaOrArray",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool": "SchemaOrBool",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray": "SchemaOrStringArray",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Verbs": "StringList",
    "k8s.io.api.authentication.v1.ExtraValue": "StringList",
    "k8s.io.api.authorization.v1.ExtraValue": "StringList",
    "k8s.io.api.certificates.v1.ExtraValue": "StringList",
}

# Upstream message names that are not OpenAPI definitions and that prost re-cased.
NAME_OVERRIDES = {
    "Json": "JSON",
    "JsonSchemaPropsOrArray": "JSONSchemaPropsOrArray",
    "JsonSchemaPropsOrBool": "JSONSchemaPropsOrBool",
    "JsonSchemaPropsOrStringArray": "JSONSchemaPropsOrStringArray",
}

# Fields of messages that are neither OpenAPI definitions nor commented with their name, so
# the join cannot see their JSON names: the camelCase of the Rust name, checked by hand against
# upstream's generated.proto (none contains an acronym). A new field outside this list stops
# the generator until someone checks it.
CHECKED_CAMEL_CASE = {
    "k8s.io.api.core.v1.AvoidPods.prefer_avoid_pods",
    "k8s.io.api.core.v1.PodExecOptions.stdout",
    "k8s.io.api.core.v1.PodExecOptions.stderr",
    "k8s.io.api.core.v1.PodLogOptions.follow",
    "k8s.io.api.core.v1.PodLogOptions.previous",
    "k8s.io.api.core.v1.PodLogOptions.since_seconds",
    "k8s.io.api.core.v1.PodLogOptions.since_time",
    "k8s.io.api.core.v1.PodLogOptions.timestamps",
    "k8s.io.api.core.v1.PodLogOptions.tail_lines",
    "k8s.io.api.core.v1.PodLogOptions.limit_bytes",
    "k8s.io.api.core.v1.PodLogOptions.stream",
    "k8s.io.api.core.v1.PodSignature.pod_controller",
    "k8s.io.api.core.v1.PreferAvoidPodsEntry.pod_signature",
    "k8s.io.api.core.v1.PreferAvoidPodsEntry.eviction_time",
    "k8s.io.api.core.v1.PodAttachOptions.stdout",
    "k8s.io.api.core.v1.PodAttachOptions.stderr",
    "k8s.io.api.core.v1.RangeAllocation.range",
    "k8s.io.apimachinery.pkg.apis.meta.v1.ApplyOptions.force",
    "k8s.io.apimachinery.pkg.apis.meta.v1.ListOptions.watch",
    "k8s.io.apimachinery.pkg.apis.meta.v1.ListOptions.send_initial_events",
    "k8s.io.apimachinery.pkg.apis.meta.v1.PatchOptions.force",
    "k8s.io.apimachinery.pkg.runtime.Unknown.type_meta",
    "k8s.io.apimachinery.pkg.runtime.Unknown.raw",
    "k8s.io.apimachinery.pkg.runtime.Unknown.content_encoding",
    "k8s.io.apimachinery.pkg.runtime.Unknown.content_type",
}

# prost scalar type -> the table's `Type` variant.
SCALARS = {"string": "Str", "bytes": "Bytes", "bool": "Bool", "int32": "I32",
           "int64": "I64", "double": "F64"}
LABELS = {"Optional": "Opt", "Repeated": "Rep", "Map": "Map", "Inline": "Inline"}


def norm(name):
    """The join key of a field name: letters and digits only, lower case."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def find_crate(registry, name, version):
    pattern = os.path.join(registry, "*", f"{name}-{version}")
    hits = sorted(glob.glob(pattern))
    if not hits:
        sys.exit(f"error: {name} {version} not found under {registry}/*/ "
                 f"(fetch it with cargo, or pass --registry)")
    return hits[0]


# ---------------------------------------------------------------------------------------------
# k8s-pb: messages, numbers, types


def parse_pb_module(root, modpath):
    """Returns [(rust_name, [(number, rust_field, cardinality, scalar, type_path, doc_word)])]:
    scalar is a `Type` variant or None for messages, type_path the Rust path of the message,
    doc_word the first word of the field's doc comment."""
    text = open(os.path.join(root, "src", modpath, "mod.rs"), encoding="utf-8").read()
    # Doc comments carry braces and `#[prost(` in prose: keep only each comment block's first
    # word (upstream starts most field comments with the field's JSON name) as a marker.
    lines = []
    in_doc = False
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("//"):
            if not in_doc:
                word = re.match(r"/+\s*([A-Za-z][\w$-]*)", stripped)
                lines.append("@doc " + (word.group(1) if word else ""))
            in_doc = True
            continue
        in_doc = False
        lines.append(line)
    text = "\n".join(lines)
    out = []
    for m in re.finditer(r"pub struct (\w+) \{(.*?)\n?\}\n", text, re.S):
        name, body = m.group(1), m.group(2)
        fields = []
        parts = re.split(r"#\[prost\(", body)
        for i, part in enumerate(parts[1:]):
            doc = re.findall(r"@doc (\S*)", parts[i])
            doc = doc[-1] if doc else ""
            attr, rest = part.split(")]", 1)
            rest = rest.split("@doc", 1)[0]
            fm = re.match(r"\s*pub (?:r#)?(\w+):\s*(.*)$", rest, re.S)
            if not fm:
                sys.exit(f"error: cannot parse field in {modpath}::{name}: {rest[:80]!r}")
            rust_field = fm.group(1)
            rust_type = re.sub(r"\s+", "", fm.group(2)).rstrip(",")
            number = int(re.search(r'tag = "(\d+)"', attr).group(1))
            mm = re.match(r'btree_map = "string, (\w+)"', attr)
            if mm:
                card, kind = "Map", mm.group(1)
            else:
                kind = attr.split(",")[0].strip()
                kind = kind.split("=")[0].strip()
                card = "Repeated" if "repeated" in attr else "Optional"
            if kind == "message":
                inner = rust_type
                for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<",
                                "::prost::alloc::boxed::Box<"):
                    while inner.startswith(wrapper):
                        inner = inner[len(wrapper):-1].rstrip(",")
                if card == "Map":
                    inner = re.sub(r"^::prost::alloc::collections::BTreeMap<", "", inner)
                    inner = inner.split(",", 1)[1].rstrip(">").rstrip(",")
                type_path = inner
                scalar = None
            else:
                if kind not in SCALARS:
                    sys.exit(f"error: unknown prost type {kind!r} in {modpath}::{name}")
                type_path = None
                scalar = SCALARS[kind]
            fields.append((number, rust_field, card, scalar, type_path, doc))
        out.append((name, fields))
    return out


def resolve_path(modpath, type_path):
    """super::super::x::y::Name relative to modpath -> (module path, rust name)."""
    parts = type_path.split("::")
    if parts[0] == "crate":
        base = []
        parts = parts[1:]
    else:
        base = modpath.split("/")
        while parts and parts[0] == "super":
            base = base[:-1]
            parts = parts[1:]
    return "/".join(base + parts[:-1]), parts[-1]


def package_of(modpath):
    return "k8s.io." + modpath.replace("/", ".")


# ---------------------------------------------------------------------------------------------
# k8s-openapi: JSON names and kinds


def parse_openapi(root):
    """Returns (defs, kinds, versions): defs[proto full name] = {norm: json} per version folder
    (primary first), kinds = [(apiVersion, kind, proto full name)] from the primary folder."""
    folders = sorted(d for d in os.listdir(os.path.join(root, "src"))
                     if re.fullmatch(r"v\d+_\d+", d))
    if OPENAPI_PRIMARY not in folders:
        sys.exit(f"error: {OPENAPI_PRIMARY} missing in {root}")
    order = [OPENAPI_PRIMARY] + [f for f in reversed(folders) if f != OPENAPI_PRIMARY]
    defs = {}
    kinds = []
    for folder in order:
        for path in sorted(glob.glob(os.path.join(root, "src", folder, "**", "*.rs"),
                                     recursive=True)):
            text = open(path, encoding="utf-8").read()
            dm = re.search(r"^// Generated from definition (\S+)", text, re.M)
            if not dm:
                continue
            full = dm.group(1)
            full = re.sub(r"^io\.k8s\.", "k8s.io.", full)
            full = full.replace("apiextensions-apiserver", "apiextensions_apiserver")
            full = full.replace("kube-aggregator", "kube_aggregator")
            names = {}
            for jm in re.finditer(r'"([^"]+)" => Field::Key_\w+', text):
                names.setdefault(norm(jm.group(1)), jm.group(1))
            entry = defs.setdefault(full, {})
            for k, v in names.items():
                entry.setdefault(k, v)
            if folder == OPENAPI_PRIMARY:
                am = re.search(r'const API_VERSION: &\'static str = "([^"]*)";', text)
                km = re.search(r'const KIND: &\'static str = "([^"]*)";', text)
                if am and km:
                    kinds.append((am.group(1), km.group(1), full))
    return defs, kinds, order


# ---------------------------------------------------------------------------------------------


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registry", default=os.path.join(
        os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo")), "registry", "src"))
    ap.add_argument("--out", default=os.path.join(here, "..", "src", "api", "protobuf",
                                                  "schema.rs"))
    ap.add_argument("--allow-guesses", action="store_true")
    args = ap.parse_args()

    pb_root = find_crate(args.registry, "k8s-pb", PB_VERSION)
    oa_root = find_crate(args.registry, "k8s-openapi", OPENAPI_VERSION)
    defs, kinds, folders = parse_openapi(oa_root)
    defs_ci = {}
    for full in defs:
        pkg, _, name = full.rpartition(".")
        defs_ci[(pkg, name.lower())] = full

    # Every JSON spelling of a normalised name across all definitions, for messages that are
    # not definitions themselves (ProbeHandler, VolumeSource, ...).
    global_names = {}
    for names in defs.values():
        for k, v in names.items():
            global_names.setdefault(k, set()).add(v)

    # Load modules lazily, following references.
    modules = {}

    def load(modpath):
        if modpath not in modules:
            modules[modpath] = {n: f for n, f in parse_pb_module(pb_root, modpath)}
        return modules[modpath]

    def proto_name(modpath, rust_name):
        pkg = package_of(modpath)
        full = defs_ci.get((pkg, rust_name.lower()))
        if full:
            return full
        return pkg + "." + NAME_OVERRIDES.get(rust_name, rust_name)

    wanted = []  # (modpath, rust_name)
    seen = set()
    queue = [(p, n) for p in PACKAGES for n in load(p)]
    while queue:
        key = queue.pop(0)
        if key in seen:
            continue
        seen.add(key)
        wanted.append(key)
        modpath, rust_name = key
        for (_, _, _, _, type_path, _) in load(modpath)[rust_name]:
            if type_path:
                tm, tn = resolve_path(modpath, type_path)
                if tn not in load(tm):
                    sys.exit(f"error: {modpath}::{rust_name} refers to unknown {type_path}")
                queue.append((tm, tn))

    full_of = {key: proto_name(*key) for key in wanted}
    by_full = {v: k for k, v in full_of.items()}
    if len(by_full) != len(full_of):
        sys.exit("error: two messages map to one proto name")

    def fields_of(key):
        modpath, rust_name = key
        return [(n, f, c, s, resolve_path(modpath, t) if t else None, d)
                for (n, f, c, s, t, d) in modules[modpath][rust_name]]

    def camel(rust_field):
        return re.sub(r"_(\w)", lambda m: m.group(1).upper(), rust_field)

    # Embedded Go structs: a message-typed field with no JSON name in its parent's definition
    # whose own fields all have one there.
    inline = {}  # (parent key, number) -> target key
    inlined_into = {}  # target key -> set of JSON-name dicts of the parents
    for key in wanted:
        json_names = defs.get(full_of[key])
        if json_names is None or full_of[key] in SPECIAL:
            continue
        for (number, rust_field, card, _, target, _) in fields_of(key):
            if (target is None or card != "Optional" or norm(rust_field) in json_names
                    or full_of[target] in SPECIAL):
                continue
            if {norm(f[1]) for f in fields_of(target)} <= set(json_names):
                inline[(key, number)] = target
                inlined_into.setdefault(target, []).append(json_names)

    guesses = []
    from_docs = []
    messages = []
    for key in wanted:
        full = full_of[key]
        json_names = defs.get(full)
        if json_names is None and key in inlined_into:
            json_names = {}
            for parent_names in inlined_into[key]:
                json_names.update(parent_names)
        rows = []
        for (number, rust_field, card, scalar, target, doc) in fields_of(key):
            n = norm(rust_field)
            label = card
            spellings = global_names.get(n, set())
            if (key, number) in inline:
                # Never reaches JSON; the proto name is kept for readers of the table.
                label = "Inline"
                name = camel(rust_field)
            elif json_names is not None and n in json_names:
                name = json_names[n]
            elif len(spellings) == 1:
                name = next(iter(spellings))
            elif norm(doc) == n and doc[:1].islower():
                # Upstream starts most field comments with the field's name (but some with
                # an English word: "Follow the log stream", hence lower case only).
                name = doc
                from_docs.append(f"{full}.{name}")
            else:
                name = camel(rust_field)
                if full not in SPECIAL and f"{full}.{rust_field}" not in CHECKED_CAMEL_CASE:
                    guesses.append(f"{full}.{rust_field} -> {name} "
                                   f"(JSON spellings elsewhere: {sorted(spellings)})")
            ty = scalar if scalar else ("M", full_of[target])
            rows.append((number, name, label, ty))
        rows.sort()
        messages.append((full, SPECIAL.get(full, "None"), rows))
    messages.sort()
    index = {full: i for i, (full, _, _) in enumerate(messages)}
    inlines = sorted(f"{full_of[k]}.{n}" for (k, n) in inline)

    for full in SPECIAL:
        if full not in index:
            sys.exit(f"error: special message {full} is not in the table")

    for g in guesses:
        print("guessed:", g, file=sys.stderr)
    for i in inlines:
        print("inline:", i, file=sys.stderr)
    for d in from_docs:
        print("named from its doc comment:", d, file=sys.stderr)
    if guesses and not args.allow_guesses:
        sys.exit(f"error: {len(guesses)} field names guessed; fix the join or pass --allow-guesses")

    kind_rows = sorted({(av, k, index[full]) for (av, k, full) in kinds if full in index})

    nfields = sum(len(r) for (_, _, r) in messages)
    out = []
    w = out.append
    w("// @generated by scripts/gen-protobuf-schema.py — do not edit by hand.")
    w("//")
    w(f"// Sources: k8s-pb {PB_VERSION} (message names, field numbers and types, from upstream's")
    w(f"// generated.proto) joined with k8s-openapi {OPENAPI_VERSION} (JSON field names and kinds;")
    w(f"// {OPENAPI_PRIMARY} first, then {', '.join(f for f in folders if f != OPENAPI_PRIMARY)}).")
    w("// Regenerate: python3 scripts/gen-protobuf-schema.py && rustfmt src/api/protobuf/schema.rs")
    w(f"// {len(messages)} messages, {nfields} fields, {len(inlines)} inline, {len(kind_rows)} kinds.")
    w("")
    w("//! The Kubernetes protobuf schema: every message the API server decodes, by full proto")
    w("//! name, with each field's number, JSON name and type. Generated; see the header.")
    w("")
    w("use super::table::{f, Kind, Label::*, Message, Special, Type::*};")
    w("")
    w("/// Every message, sorted by full proto name; `Msg(i)` refers to `MESSAGES[i]`, and each")
    w("/// message's fields are sorted by number. `f(number, JSON name, label, type)`.")
    w("pub static MESSAGES: &[Message] = &[")
    for i, (full, special, rows) in enumerate(messages):
        w(f"    // {i}")
        w(f"    Message {{ name: {rust_str(full)}, special: Special::{special}, fields: &[")
        for (number, name, label, ty) in rows:
            tys = f"Msg({index[ty[1]]})" if isinstance(ty, tuple) else ty
            w(f"        f({number}, {rust_str(name)}, {LABELS[label]}, {tys}),")
        w("    ] },")
    w("];")
    w("")
    w("/// (apiVersion, kind) of each top-level type to its message, sorted.")
    w("pub static KINDS: &[Kind] = &[")
    for (av, k, i) in kind_rows:
        w(f"    Kind {{ api_version: {rust_str(av)}, kind: {rust_str(k)}, message: {i} }},")
    w("];")
    w("")
    text = "\n".join(out)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {args.out}: {len(messages)} messages, {nfields} fields, {len(kind_rows)} kinds, "
          f"{len(inlines)} inline fields", file=sys.stderr)


def rust_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


if __name__ == "__main__":
    main()
