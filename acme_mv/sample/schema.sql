-- The ACME operations schema, exactly as ../shared/acme-operations.md states it:
-- no foreign keys, nullable references, TIMESTAMP(3) without time zone
-- defaulting to the writing transaction's start, the `quanity` spelling.
-- Plus the updated_at indexes acme-mv wants for its incremental reads
-- (in production: CREATE INDEX CONCURRENTLY ... ON operations.<t> (updated_at)).
CREATE SCHEMA IF NOT EXISTS operations;

CREATE TABLE operations.customers (
    customer_id      BIGSERIAL PRIMARY KEY,
    customer_name    VARCHAR(500) NOT NULL,
    is_active        BOOLEAN NOT NULL DEFAULT TRUE,
    customer_address VARCHAR(500),
    updated_at       TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP(3),
    updated_by       BIGINT,
    created_at       TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP(3),
    created_by       BIGINT
);

CREATE TABLE operations.products (
    product_id   BIGSERIAL PRIMARY KEY,
    product_name VARCHAR(500) NOT NULL,
    barcode      VARCHAR(26) NOT NULL,
    unity_price  DECIMAL NOT NULL,
    is_active    BOOLEAN,
    updated_at   TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP(3),
    updated_by   BIGINT,
    created_at   TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP(3),
    created_by   BIGINT
);

CREATE TABLE operations.orders (
    order_id      BIGSERIAL PRIMARY KEY,
    order_date    DATE,
    delivery_date DATE,
    customer_id   BIGINT,
    status        VARCHAR,
    updated_at    TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP(3),
    updated_by    BIGINT,
    created_at    TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP(3),
    created_by    BIGINT
);

CREATE TABLE operations.order_items (
    order_item_id BIGSERIAL PRIMARY KEY,
    order_id      BIGINT,
    product_id    BIGINT,
    quanity       INTEGER,
    updated_at    TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP(3),
    updated_by    BIGINT,
    created_at    TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP(3),
    created_by    BIGINT
);

ALTER TABLE operations.customers   REPLICA IDENTITY FULL;
ALTER TABLE operations.products    REPLICA IDENTITY FULL;
ALTER TABLE operations.orders      REPLICA IDENTITY FULL;
ALTER TABLE operations.order_items REPLICA IDENTITY FULL;

CREATE INDEX customers_updated_at_idx   ON operations.customers (updated_at);
CREATE INDEX products_updated_at_idx    ON operations.products (updated_at);
CREATE INDEX orders_updated_at_idx      ON operations.orders (updated_at);
CREATE INDEX order_items_updated_at_idx ON operations.order_items (updated_at);
