"""Weights of ``"timm:<name>"`` backbones: from the local cache, or one fast try online.

timm downloads through the Hugging Face Hub, which retries for most of a minute when the
machine is offline. tlkit first looks for the file in the local caches (Hugging Face's and
torch hub's) and loads it from there without the network; only when it is not cached does it
check, once and quickly, that the source answers before letting timm download.
"""
from __future__ import annotations

import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from .errors import WeightsUnavailableError

__all__ = ["timm_model"]


def _reachable(host: str, port: int, timeout: float = 3.0) -> str | None:
    """None if ``host:port`` accepts a connection within ``timeout`` seconds, else why not.

    The check runs in a thread, so a name lookup that hangs cannot hold the caller longer.
    """
    result: list[str | None] = ["no answer within %g s" % timeout]

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result[0] = None
        except OSError as exc:
            result[0] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return result[0]


def _timm_weights_file(arch: str, fallback: str) -> tuple[str | None, str, str]:
    """(a local weights file if cached, the address the weights come from, the cache they would go to)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise WeightsUnavailableError(f"timm has no pretrained weights for {arch!r}. Use pretrained=False to train "
                                      f"it from scratch, or another model (load_backbone('{fallback}')).")
    if cfg.file:
        return cfg.file, cfg.file, str(Path(cfg.file).parent)
    if cfg.hf_hub_id:
        try:
            import huggingface_hub
            from huggingface_hub import constants

            cache = constants.HF_HUB_CACHE
            for filename in ([cfg.hf_hub_filename] if cfg.hf_hub_filename else []) + [
                    "model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]:
                found = huggingface_hub.try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=cache)
                if isinstance(found, str):
                    return found, f"{constants.ENDPOINT}/{cfg.hf_hub_id}", cache
            return None, f"{constants.ENDPOINT}/{cfg.hf_hub_id}", cache
        except ImportError:
            if not cfg.url:
                raise WeightsUnavailableError(f"timm's weights for {arch!r} live on the Hugging Face Hub: "
                                              "pip install huggingface_hub") from None
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    local = cache / cfg.url.rsplit("/", 1)[-1]
    return (str(local) if local.is_file() else None), cfg.url, str(cache)


def timm_model(arch: str, pretrained: bool, fallback: str) -> nn.Module:
    """timm's ``arch``; with ``pretrained``, its weights from the local cache, else one fast try online."""
    import timm

    if not pretrained:
        return timm.create_model(arch, pretrained=False)
    local, source, cache = _timm_weights_file(arch, fallback)
    what_to_do = (f"What to do: connect to the internet once so timm can cache them (in {cache}), or use "
                  f"load_backbone('{fallback}'), whose weights ship with tlkit and work offline.")
    if local is None:
        address = urlparse(source)
        why = _reachable(address.hostname or "", address.port or (443 if address.scheme == "https" else 80))
        if why is not None:
            raise WeightsUnavailableError(
                f"The ImageNet weights of timm's {arch!r} are not in the local cache ({cache}) and their source "
                f"{source} cannot be reached ({why}).\n{what_to_do}")
    try:
        overlay = {"file": local} if local else None
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as exc:  # timm raises several kinds when a download fails
        raise WeightsUnavailableError(
            f"timm could not load the weights of {arch!r} from {local or source}: {type(exc).__name__}: {exc}\n"
            f"{what_to_do}") from exc
