"""Plain torch networks: encoder, decoders, heads (no MONAI here)."""

from .unet import Decoder, Encoder, LocationHead, PlaneSSLNet, UNetConfig

__all__ = ["Decoder", "Encoder", "LocationHead", "PlaneSSLNet", "UNetConfig"]
