//! Normalisation of class names and stack frames, so that the same code gets the same name
//! whatever the run: class-loader and module prefixes, hidden-class addresses, and the numbers
//! of generated classes (lambdas, JDK proxies, reflection accessors, CGLIB, ByteBuddy/Mockito)
//! are removed; line numbers and `~[jar:ver]` suffixes never reach here.

/// Frames of these packages are libraries, used to pick the app's frames when `app_packages`
/// is not configured.
const LIBRARY_PREFIXES: &[&str] = &[
    "java.",
    "javax.",
    "jakarta.",
    "jdk.",
    "sun.",
    "com.sun.",
    "kotlin.",
    "kotlinx.",
    "scala.",
    "groovy.",
    "org.springframework.",
    "org.apache.",
    "org.eclipse.",
    "org.glassfish.",
    "org.jboss.",
    "org.hibernate.",
    "org.junit.",
    "junit.",
    "org.testng.",
    "org.mockito.",
    "net.bytebuddy.",
    "org.aspectj.",
    "org.codehaus.",
    "org.slf4j.",
    "ch.qos.logback.",
    "io.netty.",
    "io.grpc.",
    "io.micrometer.",
    "io.opentelemetry.",
    "io.undertow.",
    "io.vertx.",
    "io.reactivex.",
    "reactor.",
    "rx.",
    "akka.",
    "okhttp3.",
    "okio.",
    "feign.",
    "retrofit2.",
    "com.fasterxml.",
    "com.google.",
    "com.zaxxer.",
    "com.mysql.",
    "com.mongodb.",
    "com.netflix.",
    "org.postgresql.",
    "org.h2.",
    "org.w3c.",
    "org.xml.",
    "redis.clients.",
    "io.lettuce.",
    "$Proxy",
];

/// Reflection and method-handle plumbing whose presence depends on JIT state (reflection
/// inflation swaps `NativeMethodAccessorImpl` for `GeneratedMethodAccessorN`), so it never
/// enters a fingerprint.
const PLUMBING_PREFIXES: &[&str] = &[
    "sun.reflect.",
    "jdk.internal.reflect.",
    "java.lang.reflect.",
    "java.lang.invoke.",
    "jdk.proxy",
    "$Proxy",
];

/// Is `class` one of the app's own (listed in `app_packages`, or, when none is listed, outside
/// the well-known library packages)?
pub(crate) fn is_app_class(class: &str, app_packages: &[String]) -> bool {
    if app_packages.is_empty() {
        // Comparing first bytes first: most prefixes are ruled out without a call.
        let first = class.as_bytes().first().copied();
        return !LIBRARY_PREFIXES
            .iter()
            .any(|p| p.as_bytes().first().copied() == first && class.starts_with(p));
    }
    app_packages.iter().any(|p| {
        let p = p.trim_end_matches('.');
        !p.is_empty()
            && class.starts_with(p)
            && matches!(class.as_bytes().get(p.len()), None | Some(b'.' | b'$'))
    })
}

/// Is `method` (of a normalised frame) a class loader's lookup (`loadClass`, `findClass`,
/// `loadClassOrNull`, `findClass0`)? Such frames say which class was missing, not which of
/// the app's code paths failed, and HotSpot prints them only the first time a class fails to
/// resolve; they never count as the app's, even in a class loader of the app's packages.
pub(crate) fn is_class_loading(method: &str) -> bool {
    method.starts_with("loadClass") || method.starts_with("findClass")
}

/// Is this normalised frame reflection plumbing?
pub(crate) fn is_plumbing(frame: &str) -> bool {
    PLUMBING_PREFIXES.iter().any(|p| frame.starts_with(p))
        || (frame.contains('$') && frame.contains("$$Lambda."))
}

/// Appends the normalised form of class name `class` to `out`.
pub(crate) fn push_class(class: &str, out: &mut String) {
    // A hidden class (`Foo$$Lambda/0x0000000800c3b040`) carries its address after a slash.
    let class = match class.find('/') {
        Some(i) => &class[..i],
        None => class,
    };
    let (pkg, simple) = match class.rfind('.') {
        Some(i) => (&class[..=i], &class[i + 1..]),
        None => ("", class),
    };
    // JDK dynamic proxies: `com.sun.proxy.$Proxy12`, `jdk.proxy2.$Proxy45`.
    if let Some(rest) = simple.strip_prefix("$Proxy")
        && rest.bytes().all(|b| b.is_ascii_digit())
    {
        out.push_str("$Proxy");
        return;
    }
    for acc in [
        "GeneratedMethodAccessor",
        "GeneratedConstructorAccessor",
        "GeneratedSerializationConstructorAccessor",
    ] {
        if let Some(rest) = simple.strip_prefix(acc)
            && rest.bytes().all(|b| b.is_ascii_digit())
        {
            out.push_str(pkg);
            out.push_str(acc);
            return;
        }
    }
    let start = out.len();
    out.push_str(class);
    if !class.contains('$') {
        // Every generated-name marker below holds a `$`: the common case ends here.
        return;
    }
    // `$$Lambda$14`, `$$Lambda/0x…`, `$$Lambda` (JDK 21): keep the marker only.
    if let Some(i) = out[start..].find("$$Lambda") {
        out.truncate(start + i + "$$Lambda".len());
        return;
    }
    // CGLIB: `$$EnhancerBySpringCGLIB$$1a2b3c`, `$$EnhancerByMockitoWithCGLIB$$…$$FastClass…`,
    // `$$SpringCGLIB$$0`.
    if let Some(i) = cglib_marker(&out[start..]) {
        out.truncate(start + i);
        out.push_str("$$CGLIB");
        return;
    }
    // ByteBuddy-based generated subclasses with random suffixes.
    for marker in [
        "$MockitoMock$",
        "$ByteBuddy$",
        "$HibernateProxy$",
        "_$$_jvst",
    ] {
        if let Some(i) = out[start..].find(marker) {
            let keep = marker.trim_end_matches('$');
            out.truncate(start + i + keep.len());
            return;
        }
    }
}

/// Position of the `$$` that opens a CGLIB-generated suffix.
fn cglib_marker(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find("$$") {
        let at = from + i;
        let seg_start = at + 2;
        let seg_end = s[seg_start..].find('$').map_or(s.len(), |j| seg_start + j);
        if s[seg_start..seg_end].contains("CGLIB") {
            return Some(at);
        }
        from = seg_start;
    }
    None
}

/// Appends the normalised form of a method name: `lambda$main$0` → `lambda$main`,
/// `access$000` → `access`, `CGLIB$fullName$0` → `fullName`.
fn push_method(method: &str, out: &mut String) {
    if !method.contains('$') {
        out.push_str(method);
        return;
    }
    let mut m = method.strip_prefix("CGLIB$").unwrap_or(method);
    while let Some(i) = m.rfind('$') {
        let tail = &m[i + 1..];
        if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) {
            m = &m[..i];
        } else {
            break;
        }
    }
    out.push_str(m);
}

/// The `class.method` text of a frame line's body (after `at `, before `(`), with any
/// class-loader or module prefix (`app//`, `java.base/`, `java.base@17.0.9/`,
/// `webapp-loader//`) removed.
pub(crate) fn strip_loader(body: &str) -> &str {
    if let Some(i) = body.find('/') {
        let prefix = &body[..i];
        // A hidden class name also holds a slash, but its part before it holds a `$`.
        if !prefix.contains('$') {
            return body[i + 1..].trim_start_matches('/');
        }
    }
    body
}

/// Is the frame body (after `at `, before `(`, not normalised) of the app's own code, as
/// [`is_app_class`] on its normalised class would say, and neither reflection plumbing nor a
/// class loader's lookup? Allocates nothing: it decides which exception of a chain is the
/// failure's site before any frame is normalised.
pub(crate) fn is_app_frame(body: &str, app_packages: &[String]) -> bool {
    let body = strip_loader(body.trim_matches([' ', '\t']));
    let (class, method) = match body.rfind('.') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => ("", body),
    };
    if !is_app_class(class, app_packages) || is_class_loading(method) {
        return false;
    }
    // Generated names that normalise to plumbing or to a library's name.
    let simple = class.rsplit('.').next().unwrap_or(class);
    !(memchr::memchr(b'$', class.as_bytes()).is_some()
        && (class.contains("$$Lambda") || simple.starts_with("$Proxy")))
        && !is_plumbing(body)
}

/// Appends the normalised `class.method` of a frame body to `out`; returns the length of the
/// class part written (so `out[start..start + n]` is the class).
pub(crate) fn push_frame(body: &str, out: &mut String) -> usize {
    let body = strip_loader(body.trim());
    let start = out.len();
    // The method is after the last dot that is not inside a hidden-class address.
    let (class, method) = match body.rfind('.') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => ("", body),
    };
    push_class(class, out);
    let n = out.len() - start;
    out.push('.');
    push_method(method, out);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(s: &str) -> String {
        let mut o = String::new();
        push_frame(s, &mut o);
        o
    }

    #[test]
    fn prefixes_and_generated_names() {
        let cases = [
            ("java.base/java.lang.Thread.run", "java.lang.Thread.run"),
            (
                "java.base@17.0.9/java.lang.Class.forName",
                "java.lang.Class.forName",
            ),
            ("app//shop.ShopApp.tick", "shop.ShopApp.tick"),
            (
                "lib-v1//shop.svc.ServicesImpl.loadPromo",
                "shop.svc.ServicesImpl.loadPromo",
            ),
            ("webapp-loader//com.x.A.b", "com.x.A.b"),
            ("shop.ShopApp.lambda$main$0", "shop.ShopApp.lambda$main"),
            (
                "sun.reflect.GeneratedMethodAccessor4.invoke",
                "sun.reflect.GeneratedMethodAccessor.invoke",
            ),
            ("com.sun.proxy.$Proxy12.save", "$Proxy.save"),
            ("jdk.proxy2/jdk.proxy2.$Proxy45.save", "$Proxy.save"),
            (
                "com.x.Svc$$EnhancerBySpringCGLIB$$1a2b3c.pay",
                "com.x.Svc$$CGLIB.pay",
            ),
            ("com.x.Svc$$SpringCGLIB$$0.pay", "com.x.Svc$$CGLIB.pay"),
            (
                "org.m.T$A$$EnhancerByMockitoWithCGLIB$$91611a84$$FastClassByMockitoWithCGLIB$$6019f3ca.invoke",
                "org.m.T$A$$CGLIB.invoke",
            ),
            (
                "org.m.T$A$$EnhancerByMockitoWithCGLIB$$91611a84.CGLIB$fullName$0",
                "org.m.T$A$$CGLIB.fullName",
            ),
            (
                "org.m.IMethods$MockitoMock$403169643.foo",
                "org.m.IMethods$MockitoMock.foo",
            ),
            (
                "com.x.A$$Lambda$14/0x0000000800066840.run",
                "com.x.A$$Lambda.run",
            ),
            (
                "com.x.A$$Lambda/0x0000000800066840.run",
                "com.x.A$$Lambda.run",
            ),
            (
                "app//com.x.A$$Lambda$7/0x00000008000c4a48.run",
                "com.x.A$$Lambda.run",
            ),
            (
                "org.x.MathRuntimeException$6.next",
                "org.x.MathRuntimeException$6.next",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(frame(input), want, "{input}");
        }
    }

    #[test]
    fn app_classes() {
        assert!(is_app_class("shop.svc.A", &[]));
        assert!(!is_app_class("java.lang.Thread", &[]));
        let pk = vec!["com.example".to_owned()];
        assert!(is_app_class("com.example.A", &pk));
        assert!(!is_app_class("com.examples.A", &pk));
        assert!(!is_app_class("shop.svc.A", &pk));
    }
}
