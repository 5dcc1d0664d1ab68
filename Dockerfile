# acme-mv as a container image: the `acme-mv` command is the entrypoint.
#
# Installed the way the README installs it (pip, this project), with two
# differences on purpose: no editable install (the image keeps no source tree)
# and no `test` extra (the image runs acme-mv, not its test suite). The wheel
# carries migrations/, views/ and alembic.ini under acme_mv/_data, so
# `acme-mv migrate` works from the installed package alone.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY acme_mv ./acme_mv
COPY migrations ./migrations
COPY views ./views
RUN python -m pip install . \
    && rm -rf /src

# a fixed, non-root user; /exports is where `acme-mv export` writes by default
RUN useradd --create-home --uid 10001 --user-group acme \
    && mkdir /exports \
    && chown acme:acme /exports
USER acme
WORKDIR /exports

ENTRYPOINT ["acme-mv"]
CMD ["--help"]
