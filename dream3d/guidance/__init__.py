"""Score-distillation guidance: a frozen diffusion prior turns rendered views into gradients."""
