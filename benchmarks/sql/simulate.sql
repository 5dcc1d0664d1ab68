-- The contract's live workload as a server-side procedure: the write load of
-- the change-capture benchmark at rates a Python writer cannot reach on a
-- small machine (benchmarks/sql_writer.py installs it, runs it, drops it).
--
-- The same jobs, proportions and statements as `acme-mv sample simulate`
-- (acme_mv/sample/simulate.py), each row change its own transaction (COMMIT
-- inside the procedure; updated_at = the transaction's CURRENT_TIMESTAMP(3)),
-- with two differences:
-- - which order of today is a customer's open one and which its first is kept
--   in the session (temp tables, kept across CALLs) instead of being looked up
--   on the source for every order job (a scan of today's orders: the contract's
--   DDL has no index on customer_id). They are read from the source once per
--   session and day. Lanes split the customers (customer_id % lanes = lane) so
--   writers never share one.
-- - names and addresses are short generated strings, not the sample's words.
-- Pacing: row change n (from 0) waits until n / rate seconds after the call's
-- start; more than 1 s behind, the schedule restarts from now (as the Python
-- pacer). The caller runs it in chunks of a few seconds (a backend reports its
-- table statistics only between statements), each with a seed of its own.
-- An order job that finds no customer of its lane inserts one (as the Python
-- writer does when there is no customer at all).
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
    today_low bigint;       -- every order dated today has an id >= today_low
    customer bigint;
    open_order bigint;
    first_order bigint;
    new_order bigint;
    draw float8;            -- which job: customers, products or orders, by weight
    tries int;
    changes int;            -- the row changes of this job
    moved_to text;
    new_customer boolean;
BEGIN
    PERFORM setseed(seed);
    CREATE TEMP TABLE IF NOT EXISTS writer_day (today date, today_low bigint);
    CREATE TEMP TABLE IF NOT EXISTS open_today (
        customer_id bigint, order_id bigint, PRIMARY KEY (customer_id, order_id));
    CREATE TEMP TABLE IF NOT EXISTS first_today (
        customer_id bigint PRIMARY KEY, order_id bigint NOT NULL);
    SELECT d.today, d.today_low INTO today, today_low FROM writer_day d;
    COMMIT;
    LOOP
        EXIT WHEN clock_timestamp() >= deadline;
        IF today IS DISTINCT FROM current_date THEN  -- a new session, or the day rolled over
            today := current_date;
            SELECT coalesce(min(order_id), (SELECT coalesce(max(order_id), 0) + 1
                                               FROM operations.orders))
              INTO today_low FROM operations.orders WHERE order_date = today;
            TRUNCATE writer_day, open_today, first_today;
            INSERT INTO writer_day VALUES (today, today_low);
            INSERT INTO open_today
                SELECT o.customer_id, o.order_id FROM operations.orders o
                 WHERE o.order_date = today AND o.order_id >= today_low
                   AND o.status <> 'COMPLETED' AND o.customer_id % lanes = lane;
            INSERT INTO first_today
                SELECT o.customer_id, min(o.order_id) FROM operations.orders o
                 WHERE o.order_date = today AND o.order_id >= today_low
                   AND o.customer_id % lanes = lane GROUP BY o.customer_id;
            COMMIT;
        END IF;
        draw := random() * (w_customers + w_products + w_orders);
        new_customer := false;
        changes := 1;
        IF draw >= w_customers + w_products THEN
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
                new_customer := true;  -- nobody of this lane: a customer insert instead
            ELSE
                SELECT min(order_id) INTO open_order FROM open_today
                 WHERE customer_id = customer;
                IF open_order IS NULL THEN
                    changes := 1 + items_min
                               + floor(random() * (items_max - items_min + 1))::int;
                END IF;
            END IF;
        END IF;
        -- pace: this job's first change may run at done / rate seconds from origin
        ahead := done / rate - extract(epoch FROM clock_timestamp() - origin);
        IF ahead < -1 THEN
            origin := clock_timestamp();
            done := 0;
        ELSIF ahead > 0 THEN
            PERFORM pg_sleep(ahead);
        END IF;
        IF new_customer OR draw < w_customers THEN
            IF new_customer OR random() < insert_share THEN
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
        ELSIF draw < w_customers + w_products THEN
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
            INSERT INTO first_today VALUES (customer, new_order) ON CONFLICT DO NOTHING;
            COMMIT;
            SELECT f.order_id INTO first_order FROM first_today f WHERE f.customer_id = customer;
            FOR i IN 2..changes LOOP
                ahead := (done + i - 1) / rate - extract(epoch FROM clock_timestamp() - origin);
                IF ahead > 0 THEN
                    PERFORM pg_sleep(ahead);
                END IF;
                INSERT INTO operations.order_items
                    (order_id, product_id, quanity, created_by, updated_by)
                VALUES (first_order,
                        (SELECT t.product_id FROM operations.products t
                          WHERE t.product_id >= (SELECT min(product_id)
                                + floor(random() * (max(product_id) - min(product_id) + 1))::bigint
                                FROM operations.products)
                          ORDER BY t.product_id LIMIT 1),
                        floor(random() * 1000)::int, job_user, job_user);
                COMMIT;
            END LOOP;
        END IF;
        done := done + changes;
    END LOOP;
END
$$;
