//! A seeded generator of realistic Java service logs (logback layout), for the benchmark and
//! tests: varied INFO/DEBUG/WARN/ERROR messages and, in about 2% of the records, multi-line
//! stack traces with `Caused by:` chains, Spring/Tomcat frames, lambdas and CGLIB proxies.

use std::io::{self, Write};

/// A small deterministic PRNG (SplitMix64): the same seed gives the same log everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// What [`write_log`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenStats {
    /// Bytes written.
    pub bytes: u64,
    /// Log records (events) written.
    pub records: u64,
    /// Records carrying a multi-line stack trace.
    pub traces: u64,
    /// Physical lines written.
    pub lines: u64,
}

const LOGGERS: &[&str] = &[
    "c.e.shop.OrderService",
    "c.e.shop.CartController",
    "c.e.shop.inventory.InventoryClient",
    "c.e.shop.payment.PaymentGateway",
    "o.s.web.servlet.DispatcherServlet",
    "c.z.hikari.pool.HikariPool",
    "c.e.shop.promo.PromoEngine",
];

/// A failure scenario: chain of `(class, message, frames)` outermost first.
type Scenario = &'static [(&'static str, &'static str, &'static [&'static str])];

const WEB_FRAMES: &[&str] = &[
    "com.example.shop.web.CartController.checkout(CartController.java:{n})",
    "com.example.shop.web.CartController$$EnhancerBySpringCGLIB$${h}.checkout(<generated>)",
    "jdk.internal.reflect.GeneratedMethodAccessor{g}.invoke(Unknown Source)",
    "java.base/jdk.internal.reflect.DelegatingMethodAccessorImpl.invoke(DelegatingMethodAccessorImpl.java:43)",
    "java.base/java.lang.reflect.Method.invoke(Method.java:568)",
    "org.springframework.web.method.support.InvocableHandlerMethod.doInvoke(InvocableHandlerMethod.java:205)",
    "org.springframework.web.method.support.InvocableHandlerMethod.invokeForRequest(InvocableHandlerMethod.java:150)",
    "org.springframework.web.servlet.mvc.method.annotation.ServletInvocableHandlerMethod.invokeAndHandle(ServletInvocableHandlerMethod.java:117)",
    "org.springframework.web.servlet.DispatcherServlet.doDispatch(DispatcherServlet.java:1072)",
    "org.springframework.web.servlet.DispatcherServlet.doService(DispatcherServlet.java:965)",
    "org.springframework.web.servlet.FrameworkServlet.processRequest(FrameworkServlet.java:1006)",
    "jakarta.servlet.http.HttpServlet.service(HttpServlet.java:658)",
    "org.apache.catalina.core.ApplicationFilterChain.internalDoFilter(ApplicationFilterChain.java:205)",
    "org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:149)",
    "org.apache.catalina.core.StandardWrapperValve.invoke(StandardWrapperValve.java:166)",
    "org.apache.coyote.http11.Http11Processor.service(Http11Processor.java:391)",
    "org.apache.tomcat.util.net.NioEndpoint$SocketProcessor.doRun(NioEndpoint.java:1743)",
    "java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:1136)",
    "java.base/java.lang.Thread.run(Thread.java:840)",
];

const SCENARIOS: &[Scenario] = &[
    &[
        (
            "com.example.shop.payment.PaymentException",
            "payment {n} declined by gateway",
            &["com.example.shop.payment.PaymentGateway.charge(PaymentGateway.java:{n})"],
        ),
        (
            "java.net.SocketTimeoutException",
            "Read timed out after {n} ms",
            &[
                "java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:288)",
                "java.base/java.net.Socket$SocketInputStream.read(Socket.java:966)",
                "com.example.shop.payment.HttpGatewayClient.post(HttpGatewayClient.java:{n})",
            ],
        ),
    ],
    &[(
        "java.lang.NullPointerException",
        "Cannot invoke \"String.length()\" because \"cartId\" is null",
        &[
            "com.example.shop.cart.CartMath.sum(CartMath.java:{n})",
            "com.example.shop.cart.CartService.lambda$total${g}(CartService.java:{n})",
            "java.base/java.util.stream.ReferencePipeline$3$1.accept(ReferencePipeline.java:197)",
            "com.example.shop.cart.CartService.total(CartService.java:{n})",
        ],
    )],
    &[
        (
            "org.springframework.dao.DataAccessResourceFailureException",
            "Unable to acquire JDBC Connection",
            &[
                "org.springframework.orm.jpa.vendor.HibernateJpaDialect.convertHibernateAccessException(HibernateJpaDialect.java:277)",
                "com.example.shop.order.OrderRepository$$SpringCGLIB$$0.save(<generated>)",
                "com.example.shop.order.OrderService.place(OrderService.java:{n})",
            ],
        ),
        (
            "java.sql.SQLTransientConnectionException",
            "HikariPool-1 - Connection is not available, request timed out after {n}ms.",
            &[
                "com.zaxxer.hikari.pool.HikariPool.createTimeoutException(HikariPool.java:696)",
                "com.zaxxer.hikari.pool.HikariPool.getConnection(HikariPool.java:181)",
            ],
        ),
    ],
    &[(
        "java.lang.ClassNotFoundException",
        "com.example.shop.promo.PromoEngineV{g}",
        &[
            "java.base/jdk.internal.loader.BuiltinClassLoader.loadClass(BuiltinClassLoader.java:641)",
            "java.base/java.lang.ClassLoader.loadClass(ClassLoader.java:525)",
            "java.base/java.lang.Class.forName0(Native Method)",
            "java.base/java.lang.Class.forName(Class.java:375)",
            "app//com.example.shop.promo.PromoLoader.load(PromoLoader.java:{n})",
        ],
    )],
    &[(
        "java.lang.IllegalStateException",
        "order {n} already shipped",
        &[
            "com.example.shop.order.Order.cancel(Order.java:{n})",
            "com.example.shop.order.OrderService.cancel(OrderService.java:{n})",
        ],
    )],
];

const MESSAGES: &[&str] = &[
    "GET /api/cart/{n} 200 {m}ms",
    "POST /api/orders 201 {m}ms",
    "Order {n} placed in {m} ms for user {u}",
    "Cache refresh for region {m} done, {n} entries",
    "User {u} logged in from 10.{m}.{g}.{m}",
    "Inventory sync: {n} items updated, {m} skipped",
    "Scheduled job priceUpdate finished in {m} ms",
    "HikariPool-1 - Pool stats (total={m}, active={g}, idle={g}, waiting=0)",
    "Payment {n} authorised, amount={m}.{g} EUR",
    "Search query 'shoes size {m}' returned {n} results",
];

fn fill(template: &str, rng: &mut Rng, out: &mut Vec<u8>) {
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.extend_from_slice(&rest.as_bytes()[..i]);
        let Some(j) = rest[i..].find('}') else {
            out.extend_from_slice(&rest.as_bytes()[i..]);
            return;
        };
        let key = &rest[i + 1..i + j];
        let v = match key {
            "n" => rng.below(1_000_000),
            "m" => rng.below(500),
            "u" => 10_000 + rng.below(90_000),
            "g" => rng.below(40),
            "h" => rng.next_u64() & 0xffff_ffff,
            _ => 0,
        };
        if key == "h" {
            let _ = write!(out, "{v:08x}");
        } else {
            let _ = write!(out, "{v}");
        }
        rest = &rest[i + j + 1..];
    }
    out.extend_from_slice(rest.as_bytes());
}

/// Writes a log of about `target_bytes` (at least; it stops after the record that reaches
/// it) generated from `seed`, starting at Unix time `start` (UTC timestamps).
///
/// # Errors
/// The writer's errors.
pub fn write_log<W: Write>(
    w: &mut W,
    target_bytes: u64,
    seed: u64,
    start: i64,
) -> io::Result<GenStats> {
    let mut rng = Rng::new(seed);
    let mut st = GenStats::default();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut t_ms: i64 = start * 1000;
    while st.bytes < target_bytes {
        t_ms += rng.below(40) as i64;
        let secs = t_ms.div_euclid(1000);
        let (y, mo, d, h, mi, s) = super::time::utc_fields(secs);
        let thread = rng.below(200);
        let roll = rng.below(1000);
        let (level, trace) = match roll {
            0..=19 => ("ERROR", true),
            20..=24 => ("ERROR", false),
            25..=59 => ("WARN ", false),
            60..=159 => ("DEBUG", false),
            _ => ("INFO ", false),
        };
        let start_len = buf.len();
        let _ = write!(
            buf,
            "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{:03} {level} [http-nio-8080-exec-{thread}] {} - ",
            t_ms.rem_euclid(1000),
            rng.pick(LOGGERS)
        );
        st.records += 1;
        st.lines += 1;
        if trace {
            st.traces += 1;
            let sc = *rng.pick(SCENARIOS);
            buf.extend_from_slice(b"Request failed\n");
            for (k, (class, msg, frames)) in sc.iter().enumerate() {
                if k > 0 {
                    buf.extend_from_slice(b"Caused by: ");
                }
                buf.extend_from_slice(class.as_bytes());
                buf.extend_from_slice(b": ");
                fill(msg, &mut rng, &mut buf);
                buf.push(b'\n');
                st.lines += 1;
                for f in frames.iter() {
                    buf.extend_from_slice(b"\tat ");
                    fill(f, &mut rng, &mut buf);
                    buf.push(b'\n');
                    st.lines += 1;
                }
                if k == 0 {
                    for f in WEB_FRAMES {
                        buf.extend_from_slice(b"\tat ");
                        fill(f, &mut rng, &mut buf);
                        buf.push(b'\n');
                        st.lines += 1;
                    }
                } else {
                    let _ = writeln!(buf, "\t... {} common frames omitted", WEB_FRAMES.len());
                    st.lines += 1;
                }
            }
        } else {
            if level == "WARN " && rng.below(4) == 0 {
                fill(
                    "Retrying call to inventory after java.net.ConnectException: Connection refused (attempt {g})",
                    &mut rng,
                    &mut buf,
                );
            } else {
                let m = *rng.pick(MESSAGES);
                fill(m, &mut rng, &mut buf);
            }
            buf.push(b'\n');
        }
        st.bytes += (buf.len() - start_len) as u64;
        if buf.len() >= 1 << 20 {
            w.write_all(&buf)?;
            buf.clear();
        }
    }
    w.write_all(&buf)?;
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sized() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let sa = write_log(&mut a, 50_000, 7, 1_763_923_483).expect("writes");
        let sb = write_log(&mut b, 50_000, 7, 1_763_923_483).expect("writes");
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert!(sa.bytes >= 50_000 && sa.bytes == a.len() as u64);
        assert_eq!(sa.lines, a.iter().filter(|b| **b == b'\n').count() as u64);
    }
}
