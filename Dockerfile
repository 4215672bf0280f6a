# One image for every role: the compose file picks `api`, `worker` or `migrate` as the command.
FROM python:3.11-slim
WORKDIR /app
# The CPU build of torch. For a GPU image build with TORCH_INDEX set to a CUDA index (e.g.
# https://download.pytorch.org/whl/cu128): those wheels bring their own CUDA runtime, so this
# base image serves; the host needs the NVIDIA driver and Container Toolkit.
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" "$TORCH_SPEC"
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY migrations ./migrations
RUN pip install --no-cache-dir -e .
ENV SERVICE_DATABASE_URL=sqlite:////data/service.db
# The owner secret lives on the volume too: a new container must find the same one.
ENV SERVICE_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000
CMD ["python", "-m", "service", "serve", "--host", "0.0.0.0"]
