"""glTF 2.0 binary (GLB) checks for tests: the Khronos rules that matter for the exporter's files.

Parses the GLB container with ``struct`` (no glTF library): a 12-byte header (magic ``glTF``,
version 2, total length), then chunks of ``(length, type, data)``: the JSON chunk first (type
``JSON``, padded with spaces to 4 bytes), then the optional binary chunk (type ``BIN\\0``, padded
with zeros). :func:`check_glb` returns the list of broken rules (empty when the file passes);
:func:`read_glb` and :func:`accessor_data` let tests read what the file holds.

Rules checked (glTF 2.0 specification): header and chunk layout; ``asset.version == "2.0"``; the
GLB buffer (buffer 0 without ``uri``, ``byteLength`` within 3 bytes of the binary chunk); every
buffer view inside its buffer; every accessor's buffer view in range, its offset aligned to its
component size and its last element inside the view, ``min``/``max`` of the accessor's width;
every primitive's attribute, index and material references valid, ``POSITION`` a float ``VEC3``
with ``min`` and ``max`` that equal the data's, indices unsigned and below the vertex count,
``NORMAL`` float ``VEC3`` unit vectors, ``TEXCOORD_n`` float ``VEC2`` (here also in [0, 1]);
materials' texture references (``baseColorTexture.index`` and its ``texCoord`` set present);
textures' ``source`` and ``sampler`` indices; images either a ``uri`` or an embedded buffer view
with ``mimeType`` image/png or image/jpeg whose bytes start with that format's signature; nodes'
mesh and children indices; scenes' node indices and the default scene.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

GLB_MAGIC = 0x46546C67  # b"glTF" little-endian
CHUNK_JSON = 0x4E4F534A  # b"JSON"
CHUNK_BIN = 0x004E4942  # b"BIN\0"
COMPONENT_DTYPES = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
TYPE_WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


def read_glb(path: str | Path) -> tuple[dict, bytes]:
    """The JSON chunk (parsed) and the binary chunk (``b""`` if none) of a GLB file. Raises
    ``ValueError`` when the container itself is broken."""
    data = Path(path).read_bytes()
    if len(data) < 20:
        raise ValueError(f"{len(data)} bytes is too short for a GLB")
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC:
        raise ValueError("magic is not 'glTF'")
    if version != 2:
        raise ValueError(f"GLB version {version}, expected 2")
    if length != len(data):
        raise ValueError(f"header length {length} != file size {len(data)}")
    chunks, offset = [], 12
    while offset < len(data):
        if offset + 8 > len(data):
            raise ValueError("truncated chunk header")
        size, kind = struct.unpack_from("<II", data, offset)
        if size % 4:
            raise ValueError(f"chunk length {size} is not a multiple of 4")
        if offset + 8 + size > len(data):
            raise ValueError("chunk runs past the end of the file")
        chunks.append((kind, data[offset + 8 : offset + 8 + size]))
        offset += 8 + size
    if not chunks or chunks[0][0] != CHUNK_JSON:
        raise ValueError("the first chunk is not JSON")
    if len(chunks) > 1 and chunks[1][0] != CHUNK_BIN:
        raise ValueError("the second chunk is not BIN")
    gltf = json.loads(chunks[0][1].decode("utf-8"))
    return gltf, chunks[1][1] if len(chunks) > 1 else b""


def buffer_view_bytes(gltf: dict, binary: bytes, index: int) -> bytes:
    """The bytes of buffer view ``index`` (GLB buffer 0 only)."""
    view = gltf["bufferViews"][index]
    start = view.get("byteOffset", 0)
    return binary[start : start + view["byteLength"]]


def accessor_data(gltf: dict, binary: bytes, index: int) -> np.ndarray:
    """Accessor ``index`` as a ``(count, width)`` array (``(count,)`` for scalars) of its
    component type; sparse accessors and normalised integers are not handled."""
    acc = gltf["accessors"][index]
    dtype = np.dtype(COMPONENT_DTYPES[acc["componentType"]]).newbyteorder("<")
    width = TYPE_WIDTHS[acc["type"]]
    view = gltf["bufferViews"][acc["bufferView"]]
    raw = buffer_view_bytes(gltf, binary, acc["bufferView"])
    stride = view.get("byteStride", dtype.itemsize * width)
    out = np.ndarray(
        (acc["count"], width), dtype, buffer=raw, offset=acc.get("byteOffset", 0), strides=(stride, dtype.itemsize)
    ).copy()
    return out[:, 0] if width == 1 else out


def _in_range(i, items) -> bool:
    return isinstance(i, int) and 0 <= i < len(items)


def check_glb(path: str | Path, uv_range: tuple[float, float] | None = (0.0, 1.0)) -> list[str]:
    """The rules of the module docstring that ``path`` breaks (empty list: it passes).
    ``uv_range``: texcoords must lie in it (``None``: not checked)."""
    try:
        gltf, binary = read_glb(path)
    except (ValueError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return [f"container: {e}"]
    problems = []
    if gltf.get("asset", {}).get("version") != "2.0":
        problems.append(f"asset.version is {gltf.get('asset', {}).get('version')!r}, expected '2.0'")
    buffers = gltf.get("buffers", [])
    views = gltf.get("bufferViews", [])
    accessors = gltf.get("accessors", [])
    meshes, materials = gltf.get("meshes", []), gltf.get("materials", [])
    textures, images, samplers = gltf.get("textures", []), gltf.get("images", []), gltf.get("samplers", [])
    nodes, scenes = gltf.get("nodes", []), gltf.get("scenes", [])

    for i, buf in enumerate(buffers):
        if "uri" in buf:
            continue
        if i != 0:
            problems.append(f"buffers[{i}] has no uri (only buffer 0 may be the GLB chunk)")
        elif not (buf.get("byteLength", -1) <= len(binary) <= buf.get("byteLength", -1) + 3):
            problems.append(
                f"buffers[0].byteLength {buf.get('byteLength')} does not match the BIN chunk ({len(binary)})"
            )
    for i, view in enumerate(views):
        if not _in_range(view.get("buffer"), buffers):
            problems.append(f"bufferViews[{i}].buffer out of range")
            continue
        end = view.get("byteOffset", 0) + view.get("byteLength", 0)
        if view.get("byteLength", 0) < 1 or end > buffers[view["buffer"]].get("byteLength", 0):
            problems.append(f"bufferViews[{i}] (end {end}) is not inside its buffer")
        stride = view.get("byteStride")
        if stride is not None and not (4 <= stride <= 252 and stride % 4 == 0):
            problems.append(f"bufferViews[{i}].byteStride {stride} must be a multiple of 4 in [4, 252]")

    data = {}
    for i, acc in enumerate(accessors):
        if acc.get("componentType") not in COMPONENT_DTYPES or acc.get("type") not in TYPE_WIDTHS:
            problems.append(f"accessors[{i}] has componentType {acc.get('componentType')} / type {acc.get('type')}")
            continue
        if not _in_range(acc.get("bufferView"), views):
            problems.append(f"accessors[{i}].bufferView {acc.get('bufferView')} out of range")
            continue
        width, item = TYPE_WIDTHS[acc["type"]], np.dtype(COMPONENT_DTYPES[acc["componentType"]]).itemsize
        view = views[acc["bufferView"]]
        stride = view.get("byteStride", item * width)
        offset = acc.get("byteOffset", 0)
        if offset % item or (view.get("byteOffset", 0) + offset) % item:
            problems.append(f"accessors[{i}] is not aligned to its component size {item}")
        if acc.get("count", 0) < 1 or offset + (acc["count"] - 1) * stride + item * width > view["byteLength"]:
            problems.append(f"accessors[{i}] (count {acc.get('count')}) does not fit its buffer view")
            continue
        for key in ("min", "max"):
            if key in acc and len(acc[key]) != width:
                problems.append(f"accessors[{i}].{key} has {len(acc[key])} values, expected {width}")
        data[i] = accessor_data(gltf, binary, i)

    def float_accessor(i, kind, where):
        acc = accessors[i] if _in_range(i, accessors) else None
        if acc is None or i not in data:
            problems.append(f"{where} accessor {i} is missing or broken")
            return None
        if acc["componentType"] != 5126 or acc["type"] != kind:
            problems.append(f"{where} must be float {kind}, got {acc['componentType']} {acc['type']}")
            return None
        return data[i].astype(np.float64)

    for m, mesh in enumerate(meshes):
        for p, prim in enumerate(mesh.get("primitives", [])):
            where = f"meshes[{m}].primitives[{p}]"
            attrs = prim.get("attributes", {})
            if "POSITION" not in attrs:
                problems.append(f"{where} has no POSITION")
                continue
            pos = float_accessor(attrs["POSITION"], "VEC3", f"{where}.POSITION")
            if pos is not None:
                acc = accessors[attrs["POSITION"]]
                if "min" not in acc or "max" not in acc:
                    problems.append(f"{where}.POSITION accessor needs min and max")
                elif not (
                    np.allclose(acc["min"], pos.min(0), rtol=0, atol=1e-6)
                    and np.allclose(acc["max"], pos.max(0), rtol=0, atol=1e-6)
                ):
                    problems.append(f"{where}.POSITION min/max {acc['min']} {acc['max']} differ from the data's")
            count = accessors[attrs["POSITION"]].get("count", 0) if _in_range(attrs["POSITION"], accessors) else 0
            for name, index in attrs.items():
                if not _in_range(index, accessors):
                    problems.append(f"{where}.{name} accessor {index} out of range")
                elif accessors[index].get("count") != count:
                    problems.append(f"{where}.{name} has {accessors[index].get('count')} items, POSITION {count}")
            if "NORMAL" in attrs:
                n = float_accessor(attrs["NORMAL"], "VEC3", f"{where}.NORMAL")
                if n is not None and not np.allclose(np.linalg.norm(n, axis=1), 1.0, atol=5e-4):
                    problems.append(f"{where}.NORMAL holds vectors that are not unit length")
            for name in [k for k in attrs if k.startswith("TEXCOORD_")]:
                uv = float_accessor(attrs[name], "VEC2", f"{where}.{name}")
                if uv is not None and uv_range is not None and (uv.min() < uv_range[0] or uv.max() > uv_range[1]):
                    problems.append(f"{where}.{name} leaves {uv_range}: [{uv.min()}, {uv.max()}]")
            if "indices" in prim:
                i = prim["indices"]
                if not _in_range(i, accessors) or i not in data:
                    problems.append(f"{where}.indices accessor {i} is missing or broken")
                elif accessors[i]["componentType"] not in (5121, 5123, 5125) or accessors[i]["type"] != "SCALAR":
                    problems.append(f"{where}.indices must be unsigned SCALAR")
                elif data[i].max() >= count:
                    problems.append(f"{where}.indices reach {data[i].max()} >= vertex count {count}")
            if "material" in prim and not _in_range(prim["material"], materials):
                problems.append(f"{where}.material {prim['material']} out of range")

    for m, mat in enumerate(materials):
        refs = dict(mat.get("pbrMetallicRoughness", {}))
        refs.update({k: mat[k] for k in ("normalTexture", "occlusionTexture", "emissiveTexture") if k in mat})
        for key, ref in refs.items():
            if not key.endswith("Texture"):
                continue
            if not _in_range(ref.get("index"), textures):
                problems.append(f"materials[{m}].{key}.index {ref.get('index')} out of range")
            texcoord = f"TEXCOORD_{ref.get('texCoord', 0)}"
            users = [
                prim
                for mesh in meshes
                for prim in mesh.get("primitives", [])
                if prim.get("material") == m and texcoord not in prim.get("attributes", {})
            ]
            if users:
                problems.append(f"materials[{m}].{key} reads {texcoord}, which a primitive using it lacks")
    for t, tex in enumerate(textures):
        if not _in_range(tex.get("source"), images):
            problems.append(f"textures[{t}].source {tex.get('source')} out of range")
        if "sampler" in tex and not _in_range(tex["sampler"], samplers):
            problems.append(f"textures[{t}].sampler {tex['sampler']} out of range")
    for k, image in enumerate(images):
        if "uri" in image:
            continue
        if not _in_range(image.get("bufferView"), views):
            problems.append(f"images[{k}] has neither a uri nor a valid bufferView")
            continue
        mime = image.get("mimeType")
        head = buffer_view_bytes(gltf, binary, image["bufferView"])[:8]
        if mime == "image/png":
            ok = head == PNG_SIGNATURE
        elif mime == "image/jpeg":
            ok = head[:3] == JPEG_SIGNATURE
        else:
            problems.append(f"images[{k}].mimeType {mime!r} must be image/png or image/jpeg")
            continue
        if not ok:
            problems.append(f"images[{k}] bytes do not start with the {mime} signature")
    for n, node in enumerate(nodes):
        if "mesh" in node and not _in_range(node["mesh"], meshes):
            problems.append(f"nodes[{n}].mesh {node['mesh']} out of range")
        problems += [
            f"nodes[{n}].children has {c}, out of range" for c in node.get("children", []) if not _in_range(c, nodes)
        ]
    for s, scene in enumerate(scenes):
        problems += [
            f"scenes[{s}].nodes has {c}, out of range" for c in scene.get("nodes", []) if not _in_range(c, nodes)
        ]
    if "scene" in gltf and not _in_range(gltf["scene"], scenes):
        problems.append(f"scene {gltf['scene']} out of range")
    return problems


def embedded_image(gltf: dict, binary: bytes, texture: int = 0) -> bytes:
    """The encoded bytes of texture ``texture``'s image, embedded in the GLB."""
    image = gltf["images"][gltf["textures"][texture]["source"]]
    return buffer_view_bytes(gltf, binary, image["bufferView"])
