"""Stand-in for vLLM on SGLang's light CPU install: SGLang imports one vLLM op on non-CUDA devices."""
