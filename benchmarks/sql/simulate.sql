-- The contract's live workload as a server-side procedure: the write load of
-- the change-capture benchmark at rates a Python writer cannot reach on a
-- small machine (benchmarks/sql_writer.py installs it, runs it, drops it).
--
-- The same jobs, proportions and statements as `acme-mv sample simulate`
-- (acme_mv/sample/simulate.py), each row change its own transaction (COMMIT
-- inside the procedure; updated_at = the transaction's CURRENT_TIMESTAMP(3)),
-- with two differences:
-- - what the customer's open / first order of today is, is kept in the
--   session (a temp table and an array) instead of being looked up on the
--   source for every order job (a scan of today's orders: the contract's DDL
--   has no index on customer_id). It is read from the source once at the start
--   and again when the day rolls over. Lanes split the customers
--   (customer_id % lanes = lane) so writers never share one.
-- - names and addresses are short generated strings, not the sample's words.
-- Pacing: row change n (from 0) waits until n / rate seconds after the start;
-- more than 1 s behind, the schedule restarts from now (as the Python pacer).
CREATE SCHEMA IF NOT EXISTS acme_bench;

CREATE OR REPLACE PROCEDURE acme_bench.simulate(
    rate float8, seconds float8, seed float8, lane int, lanes int,
    w_customers float8, w_products float8, w_orders float8,
    insert_share float8, items_min int, items_max int, job_user bigint,
    statuses text[])
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => seconds);
    origin timestamptz := clock_timestamp();
    done bigint := 0;       -- row changes since origin
    ahead float8;
    today date;
    low bigint;             -- every order dated today has an id >= low
    first_of bigint[];      -- customer -> its first order dated today
    customer bigint;
    open_order bigint;
    new_order bigint;
    job float8;
    tries int;
    n int;
    moved_to text;
BEGIN
    PERFORM setseed(seed);
    CREATE TEMP TABLE IF NOT EXISTS open_today (
        customer_id bigint, order_id bigint, PRIMARY KEY (customer_id, order_id));
    COMMIT;
    LOOP
        EXIT WHEN clock_timestamp() >= deadline;
        IF today IS DISTINCT FROM current_date THEN  -- start, or the day rolled over
            today := current_date;
            SELECT coalesce(min(order_id), (SELECT coalesce(max(order_id), 0) + 1
                                               FROM operations.orders))
              INTO low FROM operations.orders WHERE order_date = today;
            TRUNCATE open_today;
            first_of := '{}';
            INSERT INTO open_today
                SELECT o.customer_id, o.order_id FROM operations.orders o
                 WHERE o.order_date = today AND o.order_id >= low AND o.status <> 'COMPLETED'
                   AND o.customer_id % lanes = lane;
            FOR customer, new_order IN
                SELECT o.customer_id, min(o.order_id) FROM operations.orders o
                 WHERE o.order_date = today AND o.order_id >= low
                   AND o.customer_id % lanes = lane GROUP BY o.customer_id
            LOOP
                first_of[customer::int] := new_order;
            END LOOP;
            COMMIT;
        END IF;
        job := random() * (w_customers + w_products + w_orders);
        IF job < w_customers + w_products THEN
            n := 1;
        ELSE
            -- an order job: a random customer of this lane (the sample's pick:
            -- the first key at or above a random point between min and max)
            tries := 0;
            LOOP
                SELECT t.customer_id INTO customer FROM operations.customers t
                 WHERE t.customer_id >= (SELECT min(customer_id)
                          + floor(random() * (max(customer_id) - min(customer_id) + 1))::bigint
                          FROM operations.customers)
                 ORDER BY t.customer_id LIMIT 1;
                tries := tries + 1;
                EXIT WHEN customer IS NULL OR customer % lanes = lane OR tries >= 64;
            END LOOP;
            IF customer IS NULL OR customer % lanes <> lane THEN
                CONTINUE;
            END IF;
            SELECT min(order_id) INTO open_order FROM open_today WHERE customer_id = customer;
            n := CASE WHEN open_order IS NULL
                      THEN 1 + items_min + floor(random() * (items_max - items_min + 1))::int
                      ELSE 1 END;
        END IF;
        -- pace: this job's first change may run at done / rate seconds from origin
        ahead := done / rate - extract(epoch FROM clock_timestamp() - origin);
        IF ahead < -1 THEN
            origin := clock_timestamp();
            done := 0;
        ELSIF ahead > 0 THEN
            PERFORM pg_sleep(ahead);
        END IF;
        IF job < w_customers THEN
            IF random() < insert_share THEN
                INSERT INTO operations.customers
                    (customer_name, is_active, customer_address, created_by, updated_by)
                VALUES ('bench customer ' || md5(random()::text), TRUE,
                        md5(random()::text) || ' street', job_user, job_user);
            ELSE
                UPDATE operations.customers
                   SET customer_address = md5(random()::text) || ' street',
                       is_active = random() < 0.5,
                       updated_at = CURRENT_TIMESTAMP(3), updated_by = job_user
                 WHERE customer_id = (SELECT t.customer_id FROM operations.customers t
                     WHERE t.customer_id >= (SELECT min(customer_id)
                           + floor(random() * (max(customer_id) - min(customer_id) + 1))::bigint
                           FROM operations.customers)
                     ORDER BY t.customer_id LIMIT 1);
            END IF;
            COMMIT;
        ELSIF job < w_customers + w_products THEN
            IF random() < insert_share THEN
                INSERT INTO operations.products
                    (product_name, barcode, unity_price, is_active, created_by, updated_by)
                VALUES ('bench product ' || left(md5(random()::text), 8),
                        lpad((floor(random() * 1e12))::bigint::text, 13, '0'),
                        round((1 + random() * 499)::numeric, 2), random() < 0.9,
                        job_user, job_user);
            ELSE
                UPDATE operations.products
                   SET unity_price = round((1 + random() * 499)::numeric, 2),
                       is_active = random() < 0.5,
                       updated_at = CURRENT_TIMESTAMP(3), updated_by = job_user
                 WHERE product_id = (SELECT t.product_id FROM operations.products t
                     WHERE t.product_id >= (SELECT min(product_id)
                           + floor(random() * (max(product_id) - min(product_id) + 1))::bigint
                           FROM operations.products)
                     ORDER BY t.product_id LIMIT 1);
            END IF;
            COMMIT;
        ELSIF open_order IS NOT NULL THEN
            UPDATE operations.orders
               SET status = statuses[1 + floor(random() * cardinality(statuses))::int],
                   updated_at = CURRENT_TIMESTAMP(3), updated_by = job_user
             WHERE order_id = open_order AND status <> 'COMPLETED'
            RETURNING status INTO moved_to;
            IF NOT FOUND OR moved_to = 'COMPLETED' THEN
                DELETE FROM open_today WHERE customer_id = customer AND order_id = open_order;
            END IF;
            COMMIT;
        ELSE
            INSERT INTO operations.orders
                (order_date, delivery_date, customer_id, status, created_by, updated_by)
            VALUES (CURRENT_DATE, CURRENT_DATE + 10, customer, 'PENDING', job_user, job_user)
            RETURNING order_id INTO new_order;
            INSERT INTO open_today VALUES (customer, new_order);
            COMMIT;
            IF first_of[customer::int] IS NULL THEN
                first_of[customer::int] := new_order;
            END IF;
            FOR i IN 2..n LOOP
                ahead := (done + i - 1) / rate - extract(epoch FROM clock_timestamp() - origin);
                IF ahead > 0 THEN
                    PERFORM pg_sleep(ahead);
                END IF;
                INSERT INTO operations.order_items
                    (order_id, product_id, quanity, created_by, updated_by)
                VALUES (first_of[customer::int],
                        (SELECT t.product_id FROM operations.products t
                          WHERE t.product_id >= (SELECT min(product_id)
                                + floor(random() * (max(product_id) - min(product_id) + 1))::bigint
                                FROM operations.products)
                          ORDER BY t.product_id LIMIT 1),
                        floor(random() * 1000)::int, job_user, job_user);
                COMMIT;
            END LOOP;
        END IF;
        done := done + n;
    END LOOP;
END
$$;
