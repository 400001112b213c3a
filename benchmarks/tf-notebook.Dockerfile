# Benchmark 4's second baseline: the article's `tensorflow/tensorflow:2.9.0-jupyter`, written by hand.
# TF 2.9.3 and the classic Notebook 6 in a venv on the preset's own base, run as root the way that image
# runs (`jupyter notebook --allow-root`), nothing else: no hardening, limits, SSH or persistent data.
# The preset's tested versions are the constraints (constraints.txt, written from the preset by b04_up),
# so both sides start the same packages and the benchmark times what each does around them.
# b04_up builds it once and keeps it as dlbox-bench/tf-notebook:<hash of this file, the constraints, the base>.
ARG BASE
FROM ${BASE}
COPY ca-certificates.crt /usr/local/share/ca-bundle.crt
ENV LANG=C.UTF-8 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CERT=/usr/local/share/ca-bundle.crt
COPY constraints.txt /opt/constraints.txt
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install -c /opt/constraints.txt tensorflow-cpu==2.9.3 notebook==6.5.7 \
    && mkdir -p /tf
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /tf
EXPOSE 8888
CMD ["jupyter", "notebook", "--notebook-dir=/tf", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--allow-root"]
