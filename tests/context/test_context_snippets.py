"""Outlines (bodies elided, signatures and first docstring lines kept) and used identifiers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from context.snippets import identifiers, outline


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


SHOP_PY = dedent(
    '''
    #!/usr/bin/env python
    """Shopping cart utilities.

    Longer description that the outline leaves out.
    """

    from __future__ import annotations

    import logging
    from dataclasses import dataclass

    logger = logging.getLogger(__name__)

    TAX_RATE = 0.2
    _CACHE: dict[str, int] = {}
    PRICES = {
        "apple": 1,
        "pear": 2,
        "plum": 3,
    }


    @dataclass
    class Item:
        """One line of a cart.

        Details.
        """

        name: str
        price: float = 0.0

        def total(self, quantity: int) -> float:
            """Price times quantity."""
            return self.price * quantity

        def _check(self) -> None:
            assert self.price >= 0


    class Cart:
        def __init__(self) -> None:
            self.items: list[Item] = []

        def add(self, item: Item) -> None:
            self.items.append(item)


    def checkout(cart: Cart, *, discount: float = 0.0) -> float:
        """Charge the customer.

        Returns the amount.
        """
        total = sum(i.price for i in cart.items)
        return total * (1 + TAX_RATE) - discount


    def _helper():
        return 1


    if __name__ == "__main__":
        print(checkout(Cart()))
    '''
)


def test_python_outline_elides_bodies_and_keeps_signatures(tmp_path: Path) -> None:
    path = tmp_path / "shop.py"
    path.write_text(SHOP_PY, encoding="utf-8")
    assert outline("shop.py", path.read_text(encoding="utf-8")) == dedent(
        '''
        """Shopping cart utilities."""
        from __future__ import annotations
        import logging
        from dataclasses import dataclass
        logger = logging.getLogger(__name__)
        TAX_RATE = 0.2
        _CACHE: dict[str, int] = {}
        PRICES = { ... }
        @dataclass
        class Item:
            """One line of a cart."""
            name: str
            price: float = 0.0
            def total(self, quantity: int) -> float:
                """Price times quantity."""
                ...
            def _check(self) -> None: ...
        class Cart:
            def __init__(self) -> None: ...
            def add(self, item: Item) -> None: ...
        def checkout(cart: Cart, *, discount: float = 0.0) -> float:
            """Charge the customer."""
            ...
        def _helper(): ...
        '''
    )


def test_used_names_keep_their_definitions_and_compress_the_rest() -> None:
    assert outline("shop.py", SHOP_PY, used_names={"Item", "checkout", "total"}) == dedent(
        '''
        """Shopping cart utilities."""
        from __future__ import annotations
        import logging
        from dataclasses import dataclass
        logger = logging.getLogger(__name__)
        TAX_RATE = 0.2
        PRICES = { ... }
        @dataclass
        class Item:
            """One line of a cart."""
            name: str
            price: float = 0.0
            def total(self, quantity: int) -> float:
                """Price times quantity."""
                ...
        class Cart: ...
        def checkout(cart: Cart, *, discount: float = 0.0) -> float:
            """Charge the customer."""
            ...
        '''
    )


def test_a_used_method_name_opens_its_class() -> None:
    text = outline("shop.py", SHOP_PY, used_names={"add"})
    assert "class Cart:\n    def __init__(self) -> None: ...\n    def add(" in text
    assert "class Item: ...\n" in text


def test_budget_drops_unused_then_imports_then_later_used_definitions() -> None:
    used = {"Item", "checkout", "total"}
    full = outline("shop.py", SHOP_PY, used_names=used)
    assert outline("shop.py", SHOP_PY, used_names=used, budget=len(full)) == full
    small = outline("shop.py", SHOP_PY, used_names=used, budget=300)
    assert len(small) <= 300
    assert small == dedent(
        '''
        """Shopping cart utilities."""
        @dataclass
        class Item:
            """One line of a cart."""
            def total(self, quantity: int) -> float:
                """Price times quantity."""
                ...
        def checkout(cart: Cart, *, discount: float = 0.0) -> float:
            """Charge the customer."""
            ...
        '''
    )
    words = outline("shop.py", SHOP_PY, budget=40, count=lambda s: len(s.split()))
    assert 0 < len(words.split()) <= 40
    assert outline("shop.py", SHOP_PY, budget=5) == ""


def test_python_module_level_blocks() -> None:
    text = dedent(
        """
        import sys
        try:
            import tomllib
        except ImportError:
            tomllib = None
        if sys.platform == "win32":
            def sep():
                return "\\\\"
        else:
            def sep():
                return "/"
        for name in ["a", "b"]:
            print(name)
        """
    )
    assert outline("compat.py", text) == dedent(
        """
        import sys
        try:
            import tomllib
        except ImportError:
            tomllib = None
        if sys.platform == "win32":
            def sep(): ...
        else:
            def sep(): ...
        """
    )


SAMPLE_TS = dedent(
    """
    // Copyright 2024 Example Corp.

    import { Base } from "./base";
    export * from "./types";

    /**
     * A shopping cart.
     * It holds items.
     */
    export class Cart extends Base {
      private items: string[] = [];
      #secret = 1;
      constructor(owner: string) {
        super();
      }
      add(item: string): void {
        this.items.push(item);
      }
    }

    export function total(cart: Cart): number {
      return 0;
    }
    export const double = (n: number): number => n * 2;
    function internal() { return 1; }
    export interface Item { name: string; price(): number }
    export const ROUTES = [
      "/a",
      "/b",
      "/c",
    ];
    app.listen(3000);
    """
)


def test_typescript_outline() -> None:
    assert outline("cart.ts", SAMPLE_TS) == dedent(
        """
        import { Base } from "./base";
        export * from "./types";
        /** A shopping cart. */
        export class Cart extends Base {
          private items: string[] = [];
          #secret = 1;
          constructor(owner: string) { ... }
          add(item: string): void { ... }
        }
        export function total(cart: Cart): number { ... }
        export const double = (n: number): number => n * 2;
        function internal() { ... }
        export interface Item { name: string; price(): number }
        export const ROUTES = [ ... ];
        """
    )
    # Unexported and private members go when the current file names other things.
    assert outline("cart.ts", SAMPLE_TS, used_names={"Cart", "add"}) == dedent(
        """
        import { Base } from "./base";
        export * from "./types";
        /** A shopping cart. */
        export class Cart extends Base {
          constructor(owner: string) { ... }
          add(item: string): void { ... }
        }
        export function total(cart: Cart): number { ... }
        export const double = (n: number): number => n * 2;
        export interface Item { name: string; price(): number }
        export const ROUTES = [ ... ];
        """
    )


def test_jsx_component_outline() -> None:
    text = dedent(
        """
        import React from "react";
        export function Button({ label }) {
          return <button className="btn">{label}</button>;
        }
        """
    )
    assert outline("Button.jsx", text) == dedent(
        """
        import React from "react";
        export function Button({ label }) { ... }
        """
    )


SAMPLE_GO = (
    "// Package cart keeps carts.\n"
    "package cart\n\n"
    'import (\n\t"fmt"\n)\n\n'
    "// MaxItems bounds a cart.\nconst MaxItems = 10\n\n"
    "// Cart holds items.\ntype Cart struct {\n\tItems []string // the items\n}\n\n"
    "// New makes a cart.\n// It never fails.\nfunc New() *Cart {\n"
    '\tfmt.Println("new")\n\treturn &Cart{}\n}\n\n'
    "func (c *Cart) Add(item string) { c.Items = append(c.Items, item) }\n\n"
    "func helper() int { return 1 }\n"
)


def test_go_outline() -> None:
    assert outline("cart.go", SAMPLE_GO) == (
        "// Package cart keeps carts.\n"
        "package cart\n"
        'import (\n\t"fmt"\n)\n'
        "// MaxItems bounds a cart.\nconst MaxItems = 10\n"
        "// Cart holds items.\ntype Cart struct {\n\tItems []string // the items\n}\n"
        "// New makes a cart.\nfunc New() *Cart { ... }\n"
        "func (c *Cart) Add(item string) { ... }\n"
        "func helper() int { ... }\n"
    )
    used = outline("cart.go", SAMPLE_GO, used_names={"New"})
    assert "func helper" not in used  # unexported and unused
    assert "// New makes a cart.\nfunc New() *Cart { ... }\n" in used
    assert "// MaxItems" not in used and "const MaxItems = 10\n" in used


SAMPLE_RS = dedent(
    """
    //! Carts.
    use std::collections::HashMap;
    mod storage;

    /// A cart.
    /// Second line.
    #[derive(Debug, Default)]
    pub struct Cart { pub items: Vec<String> }

    impl Cart {
        /// Make one.
        pub fn new() -> Self { Cart::default() }
        fn check(&self) -> bool { true }
    }

    pub trait Priced { fn price(&self) -> u32; }

    pub const LIMIT: usize = 10;
    fn helper() {}

    #[cfg(test)]
    mod tests {
        #[test]
        fn works() { assert!(true); }
    }
    """
)


def test_rust_outline() -> None:
    assert outline("src/cart.rs", SAMPLE_RS) == dedent(
        """
        //! Carts.
        use std::collections::HashMap;
        mod storage;
        /// A cart.
        #[derive(Debug, Default)]
        pub struct Cart { pub items: Vec<String> }
        impl Cart {
            /// Make one.
            pub fn new() -> Self { ... }
            fn check(&self) -> bool { ... }
        }
        pub trait Priced {
            fn price(&self) -> u32;
        }
        pub const LIMIT: usize = 10;
        fn helper() { ... }
        """
    )
    assert outline("src/cart.rs", SAMPLE_RS, used_names={"Cart"}) == dedent(
        """
        //! Carts.
        use std::collections::HashMap;
        mod storage;
        /// A cart.
        #[derive(Debug, Default)]
        pub struct Cart { pub items: Vec<String> }
        impl Cart {
            pub fn new() -> Self { ... }
        }
        pub trait Priced { ... }
        pub const LIMIT: usize = 10;
        """
    )


SAMPLE_JAVA = dedent(
    """
    package com.shop;

    import java.util.List;

    /**
     * A cart.
     * Details.
     */
    public class Cart {
        private final List<String> items = new java.util.ArrayList<>();
        public static final int LIMIT = 10;

        /** Makes a cart. */
        public Cart() {}

        public void add(String item) {
            items.add(item);
        }

        private void check() {}
    }
    """
)


def test_java_outline() -> None:
    assert outline("src/main/java/com/shop/Cart.java", SAMPLE_JAVA) == dedent(
        """
        package com.shop;
        import java.util.List;
        /** A cart. */
        public class Cart {
            private final List<String> items = new java.util.ArrayList<>();
            public static final int LIMIT = 10;
            /** Makes a cart. */
            public Cart() { ... }
            public void add(String item) { ... }
            private void check() { ... }
        }
        """
    )


SAMPLE_HPP = dedent(
    """
    #ifndef CART_HPP
    #define CART_HPP
    #pragma once
    #include <string>
    #include "item.h"

    namespace shop {
    // A cart.
    class Cart {
     public:
      Cart();
      int size() const { return n_; }
     private:
      int n_ = 0;
    };
    static int helper(int a) { return a; }
    int total(const Cart& c) {
      return c.size();
    }
    }  // namespace shop
    #endif
    """
)


def test_cpp_outline_through_guards_and_namespaces() -> None:
    assert outline("include/cart.hpp", SAMPLE_HPP) == dedent(
        """
        #ifndef CART_HPP
        #define CART_HPP
        #include <string>
        #include "item.h"
        namespace shop {
        // A cart.
        class Cart {
         public:
          Cart();
          int size() const { ... }
         private:
          int n_ = 0;
        };
        static int helper(int a) { ... }
        int total(const Cart& c) { ... }
        }
        #endif
        """
    )
    assert "helper" not in outline("include/cart.hpp", SAMPLE_HPP, used_names={"total"})


def test_c_outline() -> None:
    text = dedent(
        """
        #include <stdio.h>
        #include "cart.h"

        /* Maximum items. */
        #define MAX_ITEMS 10

        typedef struct cart { int n; } cart_t;

        static int table[] = {
          1, 2, 3,
          4, 5, 6,
        };

        int cart_add(cart_t *c, int item) {
          c->n++;
          return c->n;
        }
        """
    )
    assert outline("src/cart.c", text) == dedent(
        """
        #include <stdio.h>
        #include "cart.h"
        /* Maximum items. */
        #define MAX_ITEMS 10
        typedef struct cart { int n; } cart_t;
        static int table[] = { ... };
        int cart_add(cart_t *c, int item) { ... }
        """
    )


def test_other_languages_fall_back_to_lines() -> None:
    text = dedent(
        """
        require "set"

        # A cart.
        class Cart
          def initialize
            @items = []
          end

          def add(item)
            @items << item
          end
        end
        """
    )
    assert outline("cart.rb", text) == dedent(
        """
        require "set"
        # A cart.
        class Cart
          def initialize
            ...
          def add(item)
            ...
        end
        """
    )


@pytest.mark.parametrize("path", ["a.py", "a.ts", "a.go", "a.rs", "A.java", "a.c", "a.txt"])
def test_empty_and_broken_files(path: str) -> None:
    assert outline(path, "") == ""
    assert isinstance(outline(path, "def (:\n  {{{ class <<<\n"), str)


def test_identifiers_skip_strings_comments_and_keywords() -> None:
    assert identifiers("a.py", 'import os\nx = os.path.join("s", y)  # note\n') == {
        "os",
        "x",
        "path",
        "join",
        "y",
    }
    assert identifiers("a.ts", "const a: Foo = b.c({ d }); // zzz\n") == {"a", "Foo", "b", "c", "d"}
    assert identifiers("a.go", 'package p\nimport "fmt"\nfunc F(t T) { fmt.Println(t.X) }\n') == {
        "p",
        "F",
        "t",
        "T",
        "fmt",
        "Println",
        "X",
    }
    assert identifiers("Main.java", "class Main { Cart c = Cart.create(); }") == {
        "Main",
        "Cart",
        "c",
        "create",
    }
    assert identifiers("notes.lua", "local x = y -- z") == {"local", "x", "y", "z"}


def test_identifiers_select_definitions_of_another_file() -> None:
    current = "from shop import Item, checkout\n\nprint(checkout([Item('a')]))\n"
    used = identifiers("main.py", current)
    text = outline("shop.py", SHOP_PY, used_names=used)
    assert "class Item:\n" in text and "def checkout(" in text
    assert "class Cart: ...\n" in text and "_helper" not in text
