"""Type stubs of the compiled core (the Rust crate, built with the `python` feature)."""
from typing import List, Optional, Protocol, Sequence

__version__: str

class Error(Exception):
    """An input the tool refuses or cannot read, an invalid option, or a failed write."""

class LossyError(Error):
    """Writing would drop fields unknown to the ONNX schema (allow_lossy=True accepts it)."""

class _Converter(Protocol):
    def available(self) -> Optional[str]: ...
    def convert(self, folder: str, destination: str, models: Sequence[str], merged_config: str) -> List[str]: ...

def rewrite(
    input: str,
    output: str,
    k: int,
    alpha: float,
    force: bool,
    allow_lossy: bool,
    parallel_safe: bool,
    eval_weights: str,
    include: List[str],
    exclude: List[str],
    inner_state: str,
    target_ort: Optional[str],
    ort_format: Optional[bool] = None,
    converter: Optional[_Converter] = None,
) -> str: ...
def inspect(input: str) -> str: ...
def draw(input: str, format: str) -> str: ...
def finalize(
    input: str,
    output: str,
    weights_name: str,
    checkpoint: Optional[str],
    force: bool,
    target_ort: Optional[str],
    ort_format: Optional[bool] = None,
    converter: Optional[_Converter] = None,
) -> str: ...
def run_cli(argv: List[str], converter: Optional[_Converter] = None) -> int: ...
