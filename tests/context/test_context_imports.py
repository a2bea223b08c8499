"""Import extraction and resolution on small real projects written to disk, one per language."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from context.imports import (
    ImportRef,
    WorkspaceLayout,
    config_paths,
    extract_imports,
    resolve_imports,
)
from context.parsing import edit_tree, language_for_path, parse, shared_parsers


def write_project(root: Path, files: dict[str, str]) -> None:
    """Write `files` (relative path -> text, dedented) under `root`."""
    for relative, text in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def resolve_project(root: Path) -> dict[str, list[str]]:
    """Read the project back from disk and resolve every file's imports."""
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    configs = {p: (root / p).read_text(encoding="utf-8") for p in config_paths(paths)}
    layout = WorkspaceLayout(paths, configs)
    resolved: dict[str, list[str]] = {}
    for path in paths:
        if language_for_path(path) is None:
            continue
        text = (root / path).read_text(encoding="utf-8")
        resolved[path] = resolve_imports(path, extract_imports(path, text), layout)
    return resolved


# ---------------------------------------------------------------------------------------------
# Python

PYTHON_PROJECT = {
    "app/__init__.py": "from .core import engine\n",
    "app/core/__init__.py": "",
    "app/core/engine.py": """
        from ..util import helpers
        from . import models
        import app.util.text as text
        import os
    """,
    "app/core/models.py": """
        from app.util.helpers import slugify, CONSTANT
        from app.util import (
            text,
            missing_name,
        )
    """,
    "app/util/__init__.py": "VERSION = 1\n",
    "app/util/helpers.py": "from .text import *\n",
    "app/util/text.py": "import re\n",
    "app/typed.py": "X = 1\n",
    "app/typed.pyi": "X: int\n",
    "app/log_user.py": """
        import logging
        from app import typed

        def lazy():
            from app.core import models  # imports inside functions count too
    """,
    # src layout: `lib` is importable as `lib`, not `src.lib`.
    "src/lib/__init__.py": "from lib.sub import thing\n",
    "src/lib/sub.py": """
        from app.core import engine
        from ...outside import x
    """,
    # Scripts import their neighbours; a stray tools/logging.py must not shadow the stdlib.
    "scripts/run.py": """
        import lib
        import app.core.engine
        import helper_mod
        from lib import sub as s
    """,
    "scripts/helper_mod.py": "import logging\n",
    "tools/logging.py": "",
}


def test_python_project_resolves_relative_absolute_and_src_layout(tmp_path: Path) -> None:
    write_project(tmp_path, PYTHON_PROJECT)
    assert resolve_project(tmp_path) == {
        "app/__init__.py": ["app/core/engine.py"],
        "app/core/__init__.py": [],
        "app/core/engine.py": ["app/util/helpers.py", "app/core/models.py", "app/util/text.py"],
        "app/core/models.py": ["app/util/helpers.py", "app/util/__init__.py", "app/util/text.py"],
        "app/util/__init__.py": [],
        "app/util/helpers.py": ["app/util/text.py"],
        "app/util/text.py": [],
        "app/typed.py": [],
        "app/typed.pyi": [],
        "app/log_user.py": ["app/typed.py", "app/core/models.py"],
        "src/lib/__init__.py": ["src/lib/sub.py"],
        "src/lib/sub.py": ["app/core/engine.py"],
        "scripts/run.py": [
            "src/lib/__init__.py",
            "app/core/engine.py",
            "scripts/helper_mod.py",
            "src/lib/sub.py",
        ],
        "scripts/helper_mod.py": [],
        "tools/logging.py": [],
    }


def test_python_extraction_keeps_what_was_written() -> None:
    text = textwrap.dedent(
        """
        import a.b as c, d
        from . import x
        from ..pkg.sub import y as z, w
        from .m import *
        from __future__ import annotations
        from a import (b,
            c)
        """
    )
    assert extract_imports("pkg/mod.py", text) == [
        ImportRef("import", "a.b"),
        ImportRef("import", "d"),
        ImportRef("from", "", ("x",), 1),
        ImportRef("from", "pkg.sub", ("y", "w"), 2),
        ImportRef("from", "m", ("*",), 1),
        ImportRef("from", "a", ("b", "c")),
    ]


def test_python_extraction_survives_a_half_typed_file() -> None:
    text = "import os\n\ndef f(x):\n    return x.\n\ndef broken(:\n    pass\nimport sys\n"
    refs = extract_imports("x.py", text)
    assert ImportRef("import", "os") in refs
    assert ImportRef("import", "sys") in refs


# ---------------------------------------------------------------------------------------------
# JavaScript / TypeScript

TS_PROJECT = {
    "tsconfig.json": """
        // JSONC: comments and trailing commas are allowed.
        {
          "compilerOptions": {
            "baseUrl": ".",
            "paths": { "@lib/*": ["src/lib/*"], },
            /* "strict": true, */
          },
        }
    """,
    "src/index.ts": """
        import { App } from "./components/App";
        import util from "./util";
        export * from "./types";
        import React from "react";
        import { x } from "@lib/x";
        import cfg from "config/settings";
        const legacy = require("./legacy");
        const lazy = await import("./lazy.js");
        console.log("./not-an-import");
    """,
    "src/components/App.tsx": """
        import { Button } from "./Button";
        import type { Props } from "../types";
        export const App = (p: Props) => <Button label={p.title} />;
    """,
    "src/components/Button.tsx": "export const Button = (p: { label: string }) => null;\n",
    "src/util/index.ts": "export default {};\n",
    "src/types.d.ts": "export interface Props { title: string }\n",
    "src/lib/x.ts": "export const x = 1;\n",
    "src/legacy.cjs": "module.exports = require('./lib/x');\n",
    "src/lazy.ts": "export {};\n",
    "config/settings.js": "export default { debug: true };\n",
    "web/main.js": """
        import "../src/util/index.js";
        export { helper } from "./helpers.mjs";
        const missing = require("./nope");
    """,
    "web/helpers.mjs": "export function helper() {}\n",
}


def test_typescript_project_resolves_extensions_index_files_and_paths(tmp_path: Path) -> None:
    write_project(tmp_path, TS_PROJECT)
    assert resolve_project(tmp_path) == {
        "src/index.ts": [
            "src/components/App.tsx",
            "src/util/index.ts",
            "src/types.d.ts",
            "src/lib/x.ts",
            "config/settings.js",
            "src/legacy.cjs",
            "src/lazy.ts",
        ],
        "src/components/App.tsx": ["src/components/Button.tsx", "src/types.d.ts"],
        "src/components/Button.tsx": [],
        "src/util/index.ts": [],
        "src/types.d.ts": [],
        "src/lib/x.ts": [],
        "src/legacy.cjs": ["src/lib/x.ts"],
        "src/lazy.ts": [],
        "config/settings.js": [],
        "web/main.js": ["src/util/index.ts", "web/helpers.mjs"],
        "web/helpers.mjs": [],
    }


def test_js_extraction_kinds() -> None:
    text = textwrap.dedent(
        """
        import a, {b as c} from './x';
        import * as ns from "../y/z";
        import './side';
        export {d} from './e';
        const g = require('./g');
        const h = await import('./h');
        foo('./not-required');
        """
    )
    assert extract_imports("m.js", text) == [
        ImportRef("import", "./x"),
        ImportRef("import", "../y/z"),
        ImportRef("import", "./side"),
        ImportRef("export", "./e"),
        ImportRef("require", "./g"),
        ImportRef("dynamic", "./h"),
    ]
    ts = 'import fs = require("fs");\nimport type { T } from "./t";\n'
    assert extract_imports("m.ts", ts) == [ImportRef("require", "fs"), ImportRef("import", "./t")]


# ---------------------------------------------------------------------------------------------
# Go

GO_PROJECT = {
    "go.mod": """
        module example.com/shop // the shop

        go 1.22

        require github.com/x/y v1.0.0
    """,
    "main.go": """
        package main

        import (
            "fmt"
            "example.com/shop/internal/cart"
            m "example.com/shop/pkg/money"
            "github.com/x/y"
        )
    """,
    "internal/cart/cart.go": 'package cart\n\nimport "example.com/shop/pkg/money"\n',
    "internal/cart/item.go": "package cart\n",
    "internal/cart/cart_test.go": 'package cart\n\nimport "testing"\n',
    "pkg/money/money.go": "package money\n",
    # A nested module owns its subtree.
    "tools/go.mod": "module example.com/shop/tools\n",
    "tools/gen/gen.go": """
        package main

        import (
            "example.com/shop/tools/internal/x"
            "example.com/shop/pkg/money"
        )
    """,
    "tools/internal/x/x.go": "package x\n",
}


def test_go_module_imports_resolve_to_package_files(tmp_path: Path) -> None:
    write_project(tmp_path, GO_PROJECT)
    assert resolve_project(tmp_path) == {
        "main.go": ["internal/cart/cart.go", "internal/cart/item.go", "pkg/money/money.go"],
        "internal/cart/cart.go": ["pkg/money/money.go"],
        "internal/cart/item.go": [],
        "internal/cart/cart_test.go": [],
        "pkg/money/money.go": [],
        "tools/gen/gen.go": ["tools/internal/x/x.go", "pkg/money/money.go"],
        "tools/internal/x/x.go": [],
    }


# ---------------------------------------------------------------------------------------------
# Rust

RUST_PROJECT = {
    "Cargo.toml": """
        [package]
        name = "my-crate"
        version = "0.1.0"
        edition = "2021"
    """,
    "src/lib.rs": """
        pub mod config;
        mod net;
        #[path = "gen/out.rs"]
        mod generated;
        use crate::config::Settings;
        pub use net::client::Client;
        use std::collections::HashMap;
    """,
    "src/config.rs": """
        use crate::net::{self, client::Client as C};
        use std::fmt;
        pub struct Settings;
    """,
    "src/net/mod.rs": """
        pub mod client;
        mod inline {
            mod deep;
            use super::client::Client;
        }
        use self::client::Client;
    """,
    "src/net/client.rs": """
        use super::super::config::Settings;
        use crate::Root;
        pub struct Client;
    """,
    "src/net/inline/deep.rs": "",
    "src/gen/out.rs": "",
    "src/main.rs": """
        use my_crate::config;
        mod cli;
        fn main() {}
    """,
    "src/cli.rs": "",
}


def test_rust_crate_mod_and_use_resolve(tmp_path: Path) -> None:
    write_project(tmp_path, RUST_PROJECT)
    assert resolve_project(tmp_path) == {
        "src/lib.rs": ["src/config.rs", "src/net/mod.rs", "src/gen/out.rs", "src/net/client.rs"],
        "src/config.rs": ["src/net/mod.rs", "src/net/client.rs"],
        "src/net/mod.rs": ["src/net/client.rs", "src/net/inline/deep.rs"],
        "src/net/client.rs": ["src/config.rs", "src/lib.rs"],
        "src/net/inline/deep.rs": [],
        "src/gen/out.rs": [],
        "src/main.rs": ["src/config.rs", "src/cli.rs"],
        "src/cli.rs": [],
    }


def test_rust_use_trees_expand() -> None:
    text = "use crate::a::{self, b::C, d as e, f::*};\nmod m { use super::x; mod n; }\n"
    assert extract_imports("src/lib.rs", text) == [
        ImportRef("use", "crate::a"),
        ImportRef("use", "crate::a::b::C"),
        ImportRef("use", "crate::a::d"),
        ImportRef("use", "crate::a::f"),
        ImportRef("use", "self::x"),
        ImportRef("mod", "m::n"),
    ]


# ---------------------------------------------------------------------------------------------
# Java

JAVA_MAIN = "app/src/main/java/com/acme"
JAVA_PROJECT = {
    f"{JAVA_MAIN}/App.java": """
        package com.acme;

        import com.acme.util.Strings;
        import com.acme.model.*;
        import static com.acme.util.Strings.join;
        import java.util.List;

        class App {
            Helper helper;
            Order order;
            List<String> names;
            void run() { Config.load(); }
        }
    """,
    f"{JAVA_MAIN}/Helper.java": "package com.acme;\nclass Helper {}\n",
    f"{JAVA_MAIN}/Config.java": "package com.acme;\nclass Config { static void load() {} }\n",
    f"{JAVA_MAIN}/Unused.java": "package com.acme;\nclass Unused {}\n",
    f"{JAVA_MAIN}/util/Strings.java": "package com.acme.util;\npublic class Strings {}\n",
    f"{JAVA_MAIN}/model/Order.java": "package com.acme.model;\npublic class Order {}\n",
    f"{JAVA_MAIN}/model/Customer.java": "package com.acme.model;\npublic class Customer {}\n",
    "app/src/test/java/com/acme/AppTest.java": """
        package com.acme;

        import com.acme.util.Strings;

        class AppTest { App app; }
    """,
}


def test_java_imports_wildcards_and_same_package(tmp_path: Path) -> None:
    write_project(tmp_path, JAVA_PROJECT)
    assert resolve_project(tmp_path) == {
        f"{JAVA_MAIN}/App.java": [
            f"{JAVA_MAIN}/util/Strings.java",
            f"{JAVA_MAIN}/model/Customer.java",
            f"{JAVA_MAIN}/model/Order.java",
            f"{JAVA_MAIN}/Helper.java",
            f"{JAVA_MAIN}/Config.java",
        ],
        f"{JAVA_MAIN}/Helper.java": [],
        f"{JAVA_MAIN}/Config.java": [],
        f"{JAVA_MAIN}/Unused.java": [],
        f"{JAVA_MAIN}/util/Strings.java": [],
        f"{JAVA_MAIN}/model/Order.java": [],
        f"{JAVA_MAIN}/model/Customer.java": [],
        "app/src/test/java/com/acme/AppTest.java": [
            f"{JAVA_MAIN}/util/Strings.java",
            f"{JAVA_MAIN}/App.java",
        ],
    }


# ---------------------------------------------------------------------------------------------
# C / C++

C_PROJECT = {
    "include/mylib/api.h": '#pragma once\n#include "mylib/types.h"\nint api(void);\n',
    "include/mylib/types.h": "#pragma once\n#include <stdint.h>\ntypedef int32_t id_t;\n",
    "src/api.c": """
        #include "mylib/api.h"
        #include "internal.h"
        #include <stdio.h>
        #include <mylib/types.h>
        int api(void) { return 0; }
    """,
    "src/internal.h": '#include "../include/mylib/types.h"\n',
    "cpp/engine.cpp": """
        #include "engine.hpp"
        #include "util/strings.hh"
        #include "config.h"
        #include <vector>
        #ifdef FEATURE
        #include "missing.h"
        #endif
    """,
    "cpp/engine.hpp": '#include "mylib/api.h"\nclass Engine {};\n',
    "lib/util/strings.hh": "#pragma once\n",
    "config.h": "#define DEBUG 1\n",
}


def test_c_and_cpp_quoted_includes_resolve(tmp_path: Path) -> None:
    write_project(tmp_path, C_PROJECT)
    assert resolve_project(tmp_path) == {
        "include/mylib/api.h": ["include/mylib/types.h"],
        "include/mylib/types.h": [],
        "src/api.c": ["include/mylib/api.h", "src/internal.h", "include/mylib/types.h"],
        "src/internal.h": ["include/mylib/types.h"],
        "cpp/engine.cpp": ["cpp/engine.hpp", "lib/util/strings.hh", "config.h"],
        "cpp/engine.hpp": ["include/mylib/api.h"],
        "lib/util/strings.hh": [],
        "config.h": [],
    }


# ---------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("a.py", "python"),
        ("a.pyi", "python"),
        ("a.mjs", "javascript"),
        ("a.jsx", "javascript"),
        ("a.d.ts", "typescript"),
        ("a.cts", "typescript"),
        ("a.tsx", "tsx"),
        ("a.go", "go"),
        ("a.rs", "rust"),
        ("A.java", "java"),
        ("a.c", "c"),
        ("a.h", "cpp"),
        ("a.hxx", "cpp"),
        ("README.md", None),
    ],
)
def test_language_detection(path: str, language: str | None) -> None:
    assert language_for_path(path) == language


def test_parsers_are_created_once_and_reparse_incrementally() -> None:
    parsers = shared_parsers()
    assert parsers is shared_parsers()
    assert parsers.language("rust") is parsers.language("rust")
    old = b"import os\n\ndef f():\n    return 1\n"
    new = b"import os\nimport sys\n\ndef f():\n    return 1\n"
    tree = parse("m.py", old)
    assert tree is not None
    edit_tree(tree, old, new)
    incremental = parse("m.py", new, old_tree=tree)
    assert incremental is not None
    fresh = parse("m.py", new)
    assert fresh is not None
    assert str(incremental.root_node) == str(fresh.root_node)
    assert parse("notes.txt", "hello") is None


def test_unsupported_files_have_no_imports() -> None:
    layout = WorkspaceLayout(["notes.md", "a.py"])
    assert extract_imports("notes.md", "import a") == []
    assert resolve_imports("notes.md", [ImportRef("import", "a")], layout) == []
