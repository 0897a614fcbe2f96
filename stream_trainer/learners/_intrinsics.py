"""Three LLVM operations numba does not expose, for the learner kernels.

- `prefetch` (read, keep in all cache levels): a lookup table larger than the caches costs
  a memory round trip per event; fetching a few events ahead overlaps them.
- `load_u64`: an unaligned little-endian 8-byte load from a byte array (hashing strings a
  word at a time instead of a byte at a time).
- `trailing_zeros` of a u64 (finding the terminating NUL byte within a word).

The callers guarantee the indices are in bounds; nothing is checked here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic

_I8P = ir.IntType(8).as_pointer()
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


def _element_pointer(context: Any, builder: Any, array_type: Any, array: Any, index: Any) -> Any:
    view = context.make_array(array_type)(context, builder, array)
    get_item_pointer: Callable[..., Any] = cgutils.get_item_pointer
    return get_item_pointer(context, builder, array_type, view, [index], wraparound=False)


def _function(builder: Any, fnty: Any, name: str) -> Any:
    get_or_insert: Callable[..., Any] = cgutils.get_or_insert_function
    return get_or_insert(builder.module, fnty, name)


def _prefetch(typingctx: Any, array: Any, index: Any) -> Any:
    """Prefetch ``array[index]`` into the caches (a hint: never faults)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        fnty = ir.FunctionType(ir.VoidType(), [_I8P, _I32, _I32, _I32])
        function = _function(builder, fnty, "llvm.prefetch.p0")
        builder.call(function, [builder.bitcast(pointer, _I8P), _I32(0), _I32(3), _I32(1)])
        return context.get_dummy_value()

    return numba.types.void(array, index), codegen


def _load_u64(typingctx: Any, array: Any, index: Any) -> Any:
    """The 8 bytes ``array[index : index + 8]`` of a uint8 array as a native u64."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.load(builder.bitcast(pointer, _I64.as_pointer()), align=1)

    return numba.types.uint64(array, index), codegen


def _trailing_zeros(typingctx: Any, value: Any) -> Any:
    """Count of trailing zero bits of a u64 (64 for 0)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        fnty = ir.FunctionType(_I64, [_I64, ir.IntType(1)])
        function = _function(builder, fnty, "llvm.cttz.i64")
        return builder.call(function, [args[0], ir.IntType(1)(0)])

    return numba.types.uint64(value), codegen


# Typed as plain callables: numba's own annotation of an intrinsic hides the typing context.
prefetch: Callable[..., None] = intrinsic(_prefetch)
load_u64: Callable[..., Any] = intrinsic(_load_u64)
trailing_zeros: Callable[..., Any] = intrinsic(_trailing_zeros)
