r"""A web page that finds the faces in a photo and shows each one's expression: the faces boxed
on the photo, each face's class probabilities as bars, and the class activation map of its
predicted class. Served with Gradio, the `demo` extra (pip install -e ".[demo]").

  python -m fer_jax.demo --checkpoint runs/eac_raf [--host 127.0.0.1] [--port 7860] [--share]

Then open http://127.0.0.1:7860 and upload a photo, paste one, or take one with the webcam
(browsers allow the webcam on localhost and https pages only). The page listens on this machine
only unless --host says otherwise (--host 0.0.0.0: every network interface), and makes no public
link unless --share asks Gradio for one (anyone with the link can use the demo). Uploads are
kept in a temporary folder, printed at start, that is deleted when the demo stops (Ctrl-C).
The library behind it is fer_jax/deploy/demo_page.py.
"""

from absl import flags

from fer_jax import cli, inference
from fer_jax.deploy import demo_page


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    hint = (" (a boolean flag takes its value after '=': --share=false, or --noshare)"
            if argv[1].lower() in ("true", "false") else "")
    raise cli.UsageError(f"unexpected argument {argv[1]!r}{hint}")
  if f.min_face_size < 1:
    raise cli.UsageError(f"--min_face_size={f.min_face_size}: expected a positive size (px)")
  demo_page.require_extra()
  demo_page.check_port(f.host, f.port)
  model, variables, meta = inference.load_model(f.checkpoint)

  def ready(url, public, folder):
    if public:
      print(f"public link (anyone who has it can use the demo): {public}", flush=True)
    print(f"demo of {f.checkpoint} at {url} (Ctrl-C stops it); uploads in {folder}, deleted "
          "when it stops", flush=True)

  demo_page.serve(model, variables, meta, f.checkpoint, host=f.host, port=f.port, share=f.share,
                  min_face_size=f.min_face_size, ready=ready)


if __name__ == "__main__":
  flags.DEFINE_string("checkpoint", None, "Model directory or training workdir.", required=True)
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface).")
  flags.DEFINE_integer("port", 7860, "Port to listen on.")
  flags.DEFINE_bool("share", False, "Ask Gradio for a public link to the page.")
  flags.DEFINE_integer("min_face_size", 20, "Smallest face searched for (box side, px).")
  cli.run(main)
